//! Routing that survives outages, through a whole Sluice on both queue backends: a 429 storm
//! on the primary, a primary that is down and comes back, keys held to their quotas, a
//! provider's `retry-after`, a tokens/min limit, a request too large for any key, and a
//! tenant held to its own limits at the API.

use crate::common;

use common::{Backend, Harness, TOKEN};
use sluice::config::{
    Config, DeploymentConfig, KeyConfig, ProviderConfig, ProviderKind, RouteConfig, Secret,
};
use sluice::sim::{SimConfig, SimServer};
use std::time::{Duration, Instant};

on_both_backends!(
    a_429_storm_on_the_primary_moves_jobs_to_the_fallback,
    a_dead_primary_opens_its_circuit_and_gets_traffic_back_after_recovery,
    three_keys_of_60_per_minute_are_all_used_and_none_exceeds_it,
    retry_after_is_honoured_on_the_key,
    a_tokens_per_minute_limit_holds_with_long_prompts,
    an_estimate_over_every_burst_fails_at_once_naming_the_limit,
    a_tenant_over_its_limit_gets_a_429_with_retry_after,
    a_deployments_prompt_template_and_overrides_reach_the_provider,
    a_slow_first_token_moves_the_job_to_the_next_deployment,
    a_weighted_route_spreads_jobs_by_weight,
    a_realtime_job_moves_on_rather_than_wait_for_a_full_key,
    a_key_the_provider_says_is_spent_cools_down_before_any_429,
    a_streamed_answer_that_says_its_key_is_spent_cools_it_down,
    a_stalled_stream_fails_its_attempt_and_the_next_one_finishes,
    a_refused_key_moves_the_job_along_the_chain_and_rests,
    a_huge_retry_after_is_bounded_and_the_job_settles,
    a_key_out_of_credit_rests_everywhere_and_a_job_with_nowhere_else_fails_at_once,
);

fn key(id: &str, rpm: Option<u32>, tpm: Option<u32>) -> KeyConfig {
    KeyConfig {
        id: id.to_string(),
        secret: Secret::new(format!("secret-{id}")),
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        requests_per_day: None,
    }
}

/// Adds an OpenAI-format provider at `base_url` with `keys`, one deployment of it named
/// `deployment`, and a route `route` over `chain`.
fn add(
    config: &mut Config,
    deployment: &str,
    base_url: &str,
    keys: Vec<KeyConfig>,
    route: &str,
    chain: &[&str],
) {
    config.providers.insert(
        deployment.to_string(),
        ProviderConfig {
            kind: ProviderKind::Openai,
            base_url: base_url.to_string(),
            timeout: Duration::from_secs(3),
            keys,
        },
    );
    let mut d: DeploymentConfig = toml::from_str(&format!(
        "provider = \"{deployment}\"\nmodel = \"gpt-4o-mini\"\nprice = {{ input = 1, output = 2 }}"
    ))
    .unwrap();
    d.default_max_tokens = Some(100);
    config.deployments.insert(deployment.to_string(), d);
    let mut r: RouteConfig = toml::from_str("deployments = []").unwrap();
    r.deployments = chain.iter().map(|s| s.to_string()).collect();
    config.routes.insert(route.to_string(), r);
}

async fn submit_many(h: &Harness, model: &str, prompts: Vec<String>) -> Vec<uuid::Uuid> {
    let jobs: Vec<_> = prompts
        .into_iter()
        .map(|p| {
            serde_json::json!({"urgency": "standard",
                "request": {"model": model, "messages": [{"role": "user", "content": p}]}})
        })
        .collect();
    h.submit_all(&jobs).await
}

async fn a_429_storm_on_the_primary_moves_jobs_to_the_fallback(backend: Backend) {
    let storm = sluice::sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            rate_429: 1.0,
            retry_after: Duration::from_secs(30),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let url = storm.openai_base_url();
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "primary",
                &url,
                vec![key("p-1", None, None)],
                "storm",
                &["primary", "gpt-4o-mini"],
            )
        },
        true,
    )
    .await;
    // The first job meets the 429 and falls back; the key then cools down for its
    // retry-after, so the jobs after it skip the primary without calling it.
    let first = h.submit("storm", "first").await;
    let job = h.wait(first).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["deployment"], "primary");
    assert_eq!(attempts[0]["outcome"], "rate_limited");
    assert_eq!(attempts[1]["deployment"], "gpt-4o-mini");

    let ids = submit_many(&h, "storm", (0..10).map(|i| format!("job {i}")).collect()).await;
    for id in ids {
        let job = h.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{job:#}");
        assert_eq!(attempts[0]["deployment"], "gpt-4o-mini");
        let why = attempts[0]["chosen_because"].as_str().unwrap();
        assert!(why.contains("skipped primary (rate_limited)"), "{why}");
    }
    assert_eq!(
        storm.stats().chat_requests,
        1,
        "the cooling key was not called again"
    );
    let view = h.providers().await;
    let keys = &common::deployment_view(&view, "primary")["keys"];
    assert!(keys[0]["cooldown_ms"].as_u64().unwrap() > 0, "{view:#}");
    h.stop().await;
    storm.shutdown().await;
}

async fn a_dead_primary_opens_its_circuit_and_gets_traffic_back_after_recovery(backend: Backend) {
    let reserved = common::RefusedPort::new();
    let url = format!("{}/v1", reserved.base_url());
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "down",
                &url,
                vec![key("d-1", None, None)],
                "resilient",
                &["down", "gpt-4o-mini"],
            );
            c.health.window = 4;
            c.health.min_calls = 2;
            c.health.cooldown = Duration::from_secs(1);
        },
        true,
    )
    .await;
    for i in 0..4 {
        let id = h.submit("resilient", &format!("while down {i}")).await;
        let job = h.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            job["attempts"].as_array().unwrap().last().unwrap()["deployment"],
            "gpt-4o-mini"
        );
    }
    let view = h.providers().await;
    let down = common::deployment_view(&view, "down");
    assert_ne!(down["state"], "closed", "{view:#}");

    // Within the cooldown, jobs skip the open circuit without calling it.
    let id = h.submit("resilient", "skips").await;
    let job = h.wait(id).await;
    let first = &job["attempts"][0];
    if first["deployment"] == "gpt-4o-mini" {
        assert!(
            first["chosen_because"]
                .as_str()
                .unwrap()
                .contains("down (circuit_open)"),
            "{job:#}"
        );
    }

    // The provider comes back on the same port: after the cooldown a trial call goes
    // through, succeeds, and the primary gets its traffic back.
    let revived: SimServer = sluice::sim::spawn_on(reserved.listen(), SimConfig::default())
        .await
        .unwrap();
    // Until the cooldown ends, jobs keep going to the fallback.
    let mut i = 0;
    common::eventually(
        "traffic to return to the recovered primary",
        Duration::from_secs(20),
        async || {
            i += 1;
            let id = h.submit("resilient", &format!("after recovery {i}")).await;
            let job = h.wait(id).await;
            assert_eq!(job["status"], "succeeded", "{job:#}");
            let first = &job["attempts"][0];
            if first["deployment"] == "down" && first["outcome"] == "ok" {
                Ok(())
            } else {
                Err(format!("first attempt {first}"))
            }
        },
    )
    .await;
    let id = h.submit("resilient", "steady again").await;
    let job = h.wait(id).await;
    assert_eq!(job["attempts"][0]["deployment"], "down", "{job:#}");
    assert_eq!(
        job["attempts"][0]["chosen_because"], "priority: first choice",
        "{job:#}"
    );
    let view = h.providers().await;
    assert_eq!(
        common::deployment_view(&view, "down")["state"],
        "closed",
        "{view:#}"
    );
    assert!(revived.stats().completions >= 2);
    h.stop().await;
    revived.shutdown().await;
}

async fn three_keys_of_60_per_minute_are_all_used_and_none_exceeds_it(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "tri",
                "sim",
                vec![
                    key("tri-1", Some(60), None),
                    key("tri-2", Some(60), None),
                    key("tri-3", Some(60), None),
                ],
                "tri",
                &["tri"],
            )
        },
        true,
    )
    .await;
    // 210 jobs: 70 a key if spread evenly with no limiter; each key's bucket holds 60 and
    // refills one a second, so 30 of them must be paced.
    let started = Instant::now();
    let ids = submit_many(&h, "tri", (0..210).map(|i| format!("paced {i}")).collect()).await;
    for id in &ids {
        let job = h.wait(*id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        // Waiting for capacity is not an attempt.
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    }
    let elapsed = started.elapsed().as_secs();
    let per_key = h.app.sim.as_ref().unwrap().requests_per_key();
    let mut total = 0;
    for k in ["tri-1", "tri-2", "tri-3"] {
        let n = per_key.get(&format!("secret-{k}")).copied().unwrap_or(0);
        // The bucket: 60 at once, then one a second.
        assert!(
            n <= 60 + elapsed + 1,
            "{k}: {n} calls in {elapsed}s: {per_key:?}"
        );
        assert!(n >= 40, "{k} barely used: {per_key:?}");
        total += n;
    }
    assert_eq!(total, 210);
    h.stop().await;
}

async fn retry_after_is_honoured_on_the_key(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| c.sim.retry_after = Duration::from_secs(2),
        true,
    )
    .await;
    // gpt-4o named directly: a chain of one, so the retry waits for the key.
    let a = h.submit("gpt-4o", "[sim fail=429] first").await;
    // Once the 429 is recorded, a second job on the same key must wait out the cooldown too.
    let first_attempt = common::eventually(
        "the first attempt's outcome",
        Duration::from_secs(10),
        async || {
            let job = h.client.get(a, None).await.unwrap();
            // An attempt is shown `running` from its start; the 429 is recorded when it ends.
            let first = job["attempts"].as_array().and_then(|a| a.first()).cloned();
            first.filter(|a| a["outcome"] != "running")
        },
    )
    .await;
    assert_eq!(first_attempt["outcome"], "rate_limited");
    assert_eq!(first_attempt["retry_after_ms"], 2000);
    let b = h.submit("gpt-4o", "second").await;
    let (a, b) = (h.wait(a).await, h.wait(b).await);
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(b["status"], "succeeded", "{b:#}");
    let at = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let refused_at = at(&first_attempt["started_at"]);
    let retried_at = at(&a["attempts"][1]["started_at"]);
    let other_at = at(&b["attempts"][0]["started_at"]);
    assert!(
        retried_at - refused_at >= 2000,
        "retried after {} ms",
        retried_at - refused_at
    );
    assert!(
        other_at - refused_at >= 2000,
        "the key was used again after {} ms",
        other_at - refused_at
    );
    h.stop().await;
}

async fn a_tokens_per_minute_limit_holds_with_long_prompts(backend: Backend) {
    // Each prompt is ~200 tokens and answers are capped at 100: ~310 estimated. A key of
    // 3,100 tokens/min takes 10 at once, then one about every 6 s.
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "tpm",
                "sim",
                vec![key("tpm-1", None, Some(3100))],
                "tpm",
                &["tpm"],
            )
        },
        true,
    )
    .await;
    let estimate = {
        let d = &h.app.router.chain("tpm").unwrap()[0];
        d.estimate(&sluice::job::ChatRequest::single_user_message(
            "tpm",
            "x".repeat(800),
        ))
    };
    assert!((300..=320).contains(&estimate), "{estimate}");
    let started = Instant::now();
    let ids = submit_many(
        &h,
        "tpm",
        (0..12)
            .map(|i| format!("{i:03} {}", "word ".repeat(160)))
            .collect(),
    )
    .await;
    for id in &ids {
        let job = h.wait(*id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = h.app.sim.as_ref().unwrap().stats();
    let used = stats.prompt_tokens + stats.completion_tokens;
    // What the bucket allows: its burst, then 3,100 a minute.
    let allowed = 3100.0 + 3100.0 / 60.0 * elapsed;
    assert!(
        (used as f64) <= allowed,
        "{used} tokens in {elapsed:.1}s, allowed {allowed:.0}"
    );
    h.stop().await;
}

async fn an_estimate_over_every_burst_fails_at_once_naming_the_limit(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "small",
                "sim",
                vec![key("small-1", None, Some(1000))],
                "small",
                &["small"],
            )
        },
        true,
    )
    .await;
    let answer = h
        .client
        .submit(
            &serde_json::json!({"urgency": "standard", "request": {"model": "small",
            "max_tokens": 5000, "messages": [{"role": "user", "content": "hi"}]}}),
        )
        .await
        .unwrap();
    let id = answer["id"].as_str().unwrap().parse().unwrap();
    let job = h.wait(id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["kind"], "over_limit");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tokens_per_minute")
            && message.contains("\"small\"")
            && message.contains("1000"),
        "{message}"
    );
    assert!(job["attempts"].as_array().unwrap().is_empty());
    assert_eq!(h.sim_requests(), 0);
    h.stop().await;
}

async fn a_tenant_over_its_limit_gets_a_429_with_retry_after(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |config| config.tenants[0].requests_per_minute = Some(3),
        true,
    )
    .await;
    let job = serde_json::json!({
        "request": {"model": "fast", "messages": [{"role": "user", "content": "hello"}]}
    });
    let post = |path: &'static str, body: serde_json::Value, token: &'static str| {
        let url = format!("{}{path}", h.base_url);
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(post("/v1/jobs", job.clone(), TOKEN).await.status(), 202);
    }
    let refused = post("/v1/jobs", job.clone(), TOKEN).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let error: serde_json::Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tenant \"acme\"") && message.contains("3 requests"),
        "{message}"
    );
    // OpenAI's endpoint is held to the same limit; another tenant is not.
    let chat =
        serde_json::json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post("/v1/chat/completions", chat, TOKEN).await.status(),
        429
    );
    assert_eq!(
        post("/v1/jobs", job.clone(), common::OTHER_TOKEN)
            .await
            .status(),
        202
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE tenant = 'acme'")
            .await,
        3,
        "nothing over the limit was accepted"
    );
    h.stop().await;
}

async fn a_deployments_prompt_template_and_overrides_reach_the_provider(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |config| {
            config.deployments.get_mut("gpt-4o-mini").unwrap().overrides = toml::from_str(
                "system_prompt = \"House rules apply.\\n\\n{system}\"\n\
                 set = { temperature = 0.1 }\n\
                 max = { max_tokens = 50 }\n\
                 drop = [\"seed\"]",
            )
            .unwrap();
        },
        true,
    )
    .await;
    let answer = h
        .client
        .submit(&serde_json::json!({"request": {
            "model": "fast",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Tell me about sluices."}
            ],
            "temperature": 0.9, "max_tokens": 500, "seed": 3
        }}))
        .await
        .unwrap();
    let id = answer["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(h.wait(id).await["status"], "succeeded");
    let sent = h.app.sim.as_ref().unwrap().requests();
    let sent = sent.last().unwrap();
    assert_eq!(
        sent["messages"][0],
        serde_json::json!({"role": "system", "content": "House rules apply.\n\nBe brief."})
    );
    assert_eq!(sent["messages"][1]["role"], "user");
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["max_tokens"], 50);
    assert!(sent.get("seed").is_none(), "{sent:#}");
    h.stop().await;
}

/// The deployments that served each job's attempts, in order, with their outcomes.
async fn attempts_of(h: &Harness, id: uuid::Uuid) -> Vec<(String, String)> {
    let job = h.wait(id).await;
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["deployment"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn a_slow_first_token_moves_the_job_to_the_next_deployment(backend: Backend) {
    // A provider that takes 2 s before its first byte, behind a route that waits 300 ms.
    let slow = sluice::sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            latency: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let url = slow.openai_base_url();
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "slow",
                &url,
                vec![key("s-1", None, None)],
                "impatient",
                &["slow", "gpt-4o-mini"],
            );
            c.routes.get_mut("impatient").unwrap().first_token_timeout =
                Some(Duration::from_millis(300));
        },
        true,
    )
    .await;
    let id = h.submit("impatient", "hurry up").await;
    assert_eq!(
        attempts_of(&h, id).await,
        [
            ("slow".to_string(), "timeout".to_string()),
            ("gpt-4o-mini".to_string(), "ok".to_string())
        ]
    );
    h.stop().await;
    slow.shutdown().await;
}

/// A 401 says the deployment's key is wrong, not the request: the job moves on to the next
/// deployment, the key rests so the next job goes straight past it, and a route with
/// nowhere else to go fails the job with the provider's word.
async fn a_refused_key_moves_the_job_along_the_chain_and_rests(backend: Backend) {
    // The simulator refuses every call of a deployment whose prompt template says so.
    let refused = |c: &mut Config, name: &str| {
        c.deployments.get_mut(name).unwrap().overrides =
            toml::from_str("system_prompt = \"[sim fail=401] {system}\"").unwrap();
    };
    let h = Harness::start_with(
        backend,
        |c| {
            let chain = ["revoked", "gpt-4o-mini"];
            add(
                c,
                "revoked",
                "sim",
                vec![key("r-1", None, None)],
                "guarded",
                &chain,
            );
            refused(c, "revoked");
            add(
                c,
                "lonely",
                "sim",
                vec![key("l-1", None, None)],
                "alone",
                &["lonely"],
            );
            refused(c, "lonely");
        },
        true,
    )
    .await;
    let id = h.submit("guarded", "who are you?").await;
    assert_eq!(
        attempts_of(&h, id).await,
        [
            ("revoked".to_string(), "unauthorized".to_string()),
            ("gpt-4o-mini".to_string(), "ok".to_string())
        ]
    );
    let next = h.submit("guarded", "and now?").await;
    assert_eq!(
        attempts_of(&h, next).await,
        [("gpt-4o-mini".to_string(), "ok".to_string())],
        "the refused key rests"
    );
    let alone = h.submit("alone", "nowhere else").await;
    let job = h.wait(alone).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    h.stop().await;
}

async fn a_weighted_route_spreads_jobs_by_weight(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            let url = "sim".to_string();
            add(
                c,
                "mini-b",
                &url,
                vec![key("b-1", None, None)],
                "spread",
                &["gpt-4o-mini", "mini-b"],
            );
            let route = c.routes.get_mut("spread").unwrap();
            route.strategy =
                toml::from_str::<RouteConfig>("deployments = []\nstrategy = \"weighted\"")
                    .unwrap()
                    .strategy;
            route.weights = Some(vec![3, 1]);
        },
        true,
    )
    .await;
    let ids = submit_many(
        &h,
        "spread",
        (0..200).map(|i| format!("spread {i}")).collect(),
    )
    .await;
    for id in &ids {
        assert_eq!(h.wait(*id).await["status"], "succeeded");
    }
    let on_b = h
        .count("SELECT COUNT(*) FROM attempts WHERE deployment = 'mini-b' AND outcome = 'ok'")
        .await;
    let on_a = h
        .count("SELECT COUNT(*) FROM attempts WHERE deployment = 'gpt-4o-mini' AND outcome = 'ok'")
        .await;
    assert_eq!(on_a + on_b, 200);
    // 3:1 expects 50 on mini-b; the bounds are far outside chance for a 3:1 draw.
    assert!((20..=90).contains(&on_b), "mini-b served {on_b} of 200");
    h.stop().await;
}

async fn a_realtime_job_moves_on_rather_than_wait_for_a_full_key(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            let url = "sim".to_string();
            // One request a minute: the second realtime job would wait ~60 s there.
            add(
                c,
                "scarce",
                &url,
                vec![key("x-1", Some(1), None)],
                "eager",
                &["scarce", "gpt-4o-mini"],
            );
            c.routes.get_mut("eager").unwrap().realtime_max_wait = Duration::from_millis(100);
        },
        true,
    )
    .await;
    let realtime = |prompt: &str| {
        serde_json::json!({"urgency": "realtime",
            "request": {"model": "eager", "messages": [{"role": "user", "content": prompt}]}})
    };
    let first = h.client.submit(&realtime("first")).await.unwrap();
    let first: uuid::Uuid = first["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        attempts_of(&h, first).await,
        [("scarce".to_string(), "ok".to_string())]
    );
    let second = h.client.submit(&realtime("second")).await.unwrap();
    let second: uuid::Uuid = second["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        attempts_of(&h, second).await,
        [("gpt-4o-mini".to_string(), "ok".to_string())],
        "served at once by the next deployment, not after a minute's wait"
    );
    h.stop().await;
}

async fn a_key_the_provider_says_is_spent_cools_down_before_any_429(backend: Backend) {
    // A provider that announces 2 requests a minute: its second answer says
    // `x-ratelimit-remaining-requests: 0`, with the window's reset.
    let announcer = sluice::sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            announced_requests_per_minute: Some(2),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let url = announcer.openai_base_url();
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "announcer",
                &url,
                vec![key("a-1", None, None)],
                "heeded",
                &["announcer", "gpt-4o-mini"],
            )
        },
        true,
    )
    .await;
    let mut served_by = Vec::new();
    for i in 0..3 {
        let id = h.submit("heeded", &format!("job {i}")).await;
        served_by.extend(attempts_of(&h, id).await);
    }
    assert_eq!(
        served_by,
        [
            ("announcer".to_string(), "ok".to_string()),
            ("announcer".to_string(), "ok".to_string()),
            ("gpt-4o-mini".to_string(), "ok".to_string()),
        ],
        "the third job skips the spent key without calling it"
    );
    assert_eq!(announcer.stats().chat_requests, 2, "and it never met a 429");
    h.stop().await;
    announcer.shutdown().await;
}

/// A job's answer streamed to a client through `POST /v1/chat/completions` (the worker's
/// relay to the waiting API process), read to its end; the job's id.
async fn stream_through_api(h: &Harness, model: &str, prompt: &str) -> uuid::Uuid {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"model": model, "stream": true,
            "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    let id = response.headers()[sluice::api::JOB_ID_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    id
}

async fn a_streamed_answer_that_says_its_key_is_spent_cools_it_down(backend: Backend) {
    // Two providers announcing 2 requests a minute, each behind its own route that streams
    // (a route with an idle limit streams every call): the second streamed answer of each
    // says `remaining: 0` in its headers, before its first chunk. On the Anthropic-format one
    // that answer is relayed live to a client (the watcher's fold), on the OpenAI-format one
    // it is a queued job's (the plain fold).
    let announcing = || {
        sluice::sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            SimConfig {
                announced_requests_per_minute: Some(2),
                ..SimConfig::default()
            },
        )
    };
    let (claude, gpt) = (announcing().await.unwrap(), announcing().await.unwrap());
    let (claude_url, gpt_url) = (claude.anthropic_base_url(), gpt.openai_base_url());
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "claude-a",
                &claude_url,
                vec![key("c-1", None, None)],
                "claude-heeded",
                &["claude-a", "gpt-4o-mini"],
            );
            let provider = c.providers.get_mut("claude-a").unwrap();
            provider.kind = ProviderKind::Anthropic;
            c.deployments.get_mut("claude-a").unwrap().model = "claude-sonnet-4-5".into();
            add(
                c,
                "gpt-a",
                &gpt_url,
                vec![key("g-1", None, None)],
                "gpt-heeded",
                &["gpt-a", "gpt-4o-mini"],
            );
            for route in ["claude-heeded", "gpt-heeded"] {
                c.routes.get_mut(route).unwrap().stream_idle_timeout = Some(Duration::from_secs(2));
            }
        },
        true,
    )
    .await;
    let mut served_by = Vec::new();
    // (route, whether the spent answer is streamed to a client)
    for (route, relayed) in [("claude-heeded", true), ("gpt-heeded", false)] {
        for i in 0..3 {
            let prompt = format!("{route} job {i}");
            let id = if relayed {
                stream_through_api(&h, route, &prompt).await
            } else {
                h.submit(route, &prompt).await
            };
            served_by.extend(attempts_of(&h, id).await);
        }
    }
    let on = |d: &str| (d.to_string(), "ok".to_string());
    assert_eq!(
        served_by,
        [
            on("claude-a"),
            on("claude-a"),
            on("gpt-4o-mini"),
            on("gpt-a"),
            on("gpt-a"),
            on("gpt-4o-mini"),
        ],
        "each third job skips the key its stream's headers said was spent"
    );
    assert_eq!(claude.stats().chat_requests, 2, "and it never met a 429");
    assert_eq!(gpt.stats().chat_requests, 2);
    h.stop().await;
    claude.shutdown().await;
    gpt.shutdown().await;
}

async fn a_stalled_stream_fails_its_attempt_and_the_next_one_finishes(backend: Backend) {
    // One route per API family over the built-in simulator's deployments, each with a short
    // idle limit: the first call's stream stalls half-way (`fail=stall`), well inside the
    // 3 s whole-call timeout; the second answers.
    let families = [
        ("gpt-4o-mini", "idle-openai"),
        ("claude-sonnet", "idle-anthropic"),
        ("gemini-flash", "idle-gemini"),
    ];
    let h = Harness::start_with(
        backend,
        |c| {
            for (deployment, route) in families {
                let mut r: RouteConfig = toml::from_str("deployments = []").unwrap();
                r.deployments = vec![deployment.to_string()];
                r.stream_idle_timeout = Some(Duration::from_millis(300));
                c.routes.insert(route.to_string(), r);
            }
        },
        true,
    )
    .await;
    for (deployment, route) in families {
        let started = Instant::now();
        let id = h
            .submit(
                route,
                &format!("[sim fail=stall] a long answer from {route}"),
            )
            .await;
        let job = h.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{job:#}");
        assert_eq!(attempts[0]["deployment"], deployment);
        assert_eq!(attempts[0]["outcome"], "timeout", "{job:#}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(
            error.contains("no stream data within 300ms (the route's stream_idle_timeout)"),
            "{error}"
        );
        assert_eq!(attempts[1]["outcome"], "ok", "{job:#}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the stall was cut at its idle limit, not the whole-call timeout: {:?}",
            started.elapsed()
        );
    }
    h.stop().await;
}

/// An OpenAI-format upstream that answers every call with `status`, `headers` and the JSON
/// `body`; its `/v1` base URL.
async fn start_fixed_upstream(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: serde_json::Value,
) -> String {
    use axum::response::IntoResponse;
    let answer = move || async move {
        let mut response = (
            axum::http::StatusCode::from_u16(status).unwrap(),
            axum::Json(body),
        )
            .into_response();
        for (name, value) in headers {
            response
                .headers_mut()
                .insert(*name, axum::http::HeaderValue::from_static(value));
        }
        response
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// `retry-after: 1e20` is a valid number of seconds, and more than a `Duration` holds: the
/// wait is bounded to a day, the key cools down that long, and the jobs settle (one on the
/// fallback, one failed for its deadline) instead of a worker task panicking mid-delivery.
async fn a_huge_retry_after_is_bounded_and_the_job_settles(backend: Backend) {
    let url = start_fixed_upstream(
        429,
        &[("retry-after", "1e20")],
        serde_json::json!({"error": {"message": "Rate limit reached", "type": "requests",
            "param": null, "code": "rate_limit_exceeded"}}),
    )
    .await;
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "huge",
                &url,
                vec![key("h-1", None, None)],
                "huge-or-mini",
                &["huge", "gpt-4o-mini"],
            )
        },
        true,
    )
    .await;
    let day_ms = 24 * 60 * 60 * 1000;
    let moved = h.wait(h.submit("huge-or-mini", "first").await).await;
    assert_eq!(moved["status"], "succeeded", "{moved:#}");
    let attempts = moved["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "rate_limited", "{moved:#}");
    assert_eq!(attempts[0]["retry_after_ms"], day_ms, "{moved:#}");
    assert_eq!(attempts[1]["deployment"], "gpt-4o-mini", "{moved:#}");
    let view = h.providers().await;
    let cooldown = common::deployment_view(&view, "huge")["keys"][0]["cooldown_ms"]
        .as_u64()
        .unwrap();
    assert!(cooldown > day_ms - 60_000 && cooldown <= day_ms, "{view:#}");

    // The deployment named alone is a chain of one: a job with a deadline cannot wait a
    // day for its key, and fails.
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(60);
    let alone = h
        .submit_job(
            &serde_json::json!({"deadline": deadline, "request": {"model": "huge",
            "messages": [{"role": "user", "content": "second"}]}}),
        )
        .await;
    let alone = h.wait(alone).await;
    assert_eq!(alone["status"], "failed", "{alone:#}");
    h.stop().await;
}

/// OpenAI's `insufficient_quota` (a 429 with no `retry-after`) says the key is out of money:
/// no retry on it helps. The key rests for an hour on every deployment of its provider, the
/// job moves to a deployment with other keys, and a job that only the spent key could serve
/// fails at once, after the one call, instead of alternating deployments on it.
async fn a_key_out_of_credit_rests_everywhere_and_a_job_with_nowhere_else_fails_at_once(
    backend: Backend,
) {
    let spent = |c: &mut Config, name: &str| {
        c.deployments.get_mut(name).unwrap().overrides =
            toml::from_str("system_prompt = \"[sim fail=quota] {system}\"").unwrap();
    };
    let h = Harness::start_with(
        backend,
        |c| {
            add(
                c,
                "broke",
                "sim",
                vec![key("b-1", None, None)],
                "thrifty",
                &["broke", "gpt-4o-mini"],
            );
            spent(c, "broke");
            // Another model on the same provider and key.
            let mut too = c.deployments["broke"].clone();
            too.model = "gpt-4o".into();
            c.deployments.insert("broke-too".into(), too);
            let mut r: RouteConfig = toml::from_str("deployments = []").unwrap();
            r.deployments = vec!["broke".into(), "broke-too".into()];
            c.routes.insert("dry".into(), r);
        },
        true,
    )
    .await;
    let dry = h.submit("dry", "anything left?").await;
    let job = h.wait(dry).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["kind"], "quota_exhausted", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "one call on the spent key: {job:#}");
    assert_eq!(attempts[0]["outcome"], "quota_exhausted", "{job:#}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("out of credit"), "{message}");
    assert_eq!(h.sim_requests(), 1);

    let moved = h.submit("thrifty", "then elsewhere").await;
    assert_eq!(
        attempts_of(&h, moved).await,
        [("gpt-4o-mini".to_string(), "ok".to_string())],
        "the spent key is skipped without a call"
    );
    let job = h.wait(moved).await;
    let why = job["attempts"][0]["chosen_because"].as_str().unwrap();
    assert!(why.contains("skipped broke (quota_exhausted)"), "{why}");
    assert_eq!(h.sim_requests(), 2);
    let view = h.providers().await;
    for name in ["broke", "broke-too"] {
        let rest = common::deployment_view(&view, name)["keys"][0]["spent_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} rests: {view:#}"));
        assert!(rest > 50 * 60 * 1000, "{name}: {view:#}");
    }
    h.stop().await;
}
