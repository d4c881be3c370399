//! Budgets through a whole Sluice (real queue, store and simulator over HTTP), on both
//! backends: 200 concurrent jobs against a budget that fits 50 never overshoot it (the
//! reservations hold) and the rest fail naming the budget; a `downgrade` budget sends the
//! overflow to the cheaper route; a spent budget is refused at the API with the documented
//! 402 and shown, thresholds crossed, by `GET /v1/budgets`; the next period starts from zero.
//!
//! The simulator's answers are deterministic, so every amount here is computed by hand:
//! prompts of `"tide "` × 20 are estimated at 25 + 4 + 3 = 32 tokens and counted by the
//! simulator as 20 + 1 (the role) + 3 + 3 = 27; answers are cut at `max_tokens` = 16.

use crate::common;

use common::{Backend, Harness, TOKEN};
use serde_json::{json, Value};
use sluice::budgets::{BudgetConfig, OnExceed, Period};
use sluice::pricing::PicoUsd;
use uuid::Uuid;

on_all_backends!(
    two_hundred_concurrent_jobs_never_overshoot_a_budget_that_fits_fifty,
    a_downgrade_budget_sends_the_overflow_to_the_cheaper_route,
    a_spent_budget_is_refused_at_the_api_shown_and_reset_by_the_next_period,
    a_budget_without_room_for_the_next_job_refuses_it_before_recording_it,
    a_job_its_budget_refuses_at_its_attempt_answers_402,
);

const MAX_TOKENS: i64 = 16;
/// gpt-4o-mini ("fast") and gpt-4o, pico-USD per token: input, output.
const MINI: (i64, i64) = (150_000, 600_000);
const GPT_4O: (i64, i64) = (2_500_000, 10_000_000);

fn cost((input, output): (i64, i64), prompt: i64) -> i64 {
    prompt * input + MAX_TOKENS * output
}

fn budget(name: &str, team: &str, limit: PicoUsd, on_exceed: OnExceed) -> BudgetConfig {
    BudgetConfig {
        name: name.into(),
        tenant: Some("acme".into()),
        user: None,
        team: Some(team.into()),
        feature: None,
        period: Period::Day,
        limit_usd: limit.to_usd_string(),
        on_exceed,
        warn_at: vec!["0.8".into(), "1.0".into()],
    }
}

fn job(model: &str, team: &str, content: &str) -> Value {
    json!({
        "urgency": "standard",
        "tags": {"team": team},
        "request": {
            "model": model,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": content}]
        }
    })
}

fn tides() -> String {
    "tide ".repeat(20).trim_end().to_string()
}

/// Tomorrow's UTC midnight, as the budget messages write it.
fn tomorrow() -> String {
    let today = chrono::Utc::now().date_naive();
    format!("{}T00:00:00Z", today.succ_opt().unwrap())
}

async fn cost_row(h: &Harness, id: Uuid) -> (String, i64) {
    sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_as("SELECT deployment, amount_pico_usd FROM costs WHERE job_id = $1")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap())
}

fn find<'a>(budgets: &'a Value, name: &str) -> &'a Value {
    budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("no budget {name} in {budgets:#}"))
}

async fn two_hundred_concurrent_jobs_never_overshoot_a_budget_that_fits_fifty(backend: Backend) {
    let estimate = cost(MINI, 32);
    let actual = cost(MINI, 27);
    let limit = PicoUsd(50 * estimate);
    let h = Harness::start_with(
        backend,
        |config| {
            config
                .budgets
                .push(budget("fifty", "t200", limit, OnExceed::Reject))
        },
        true,
    )
    .await;
    // The hand-computed estimate is the one Sluice reserves.
    let request = serde_json::from_value(job("fast", "t200", &tides())["request"].clone()).unwrap();
    let mini = &h.app.router.route("fast").unwrap().chain[0];
    assert_eq!(
        sluice::budgets::estimate(mini, &request),
        Some(PicoUsd(estimate))
    );

    // One submission of 200, so the API sees an untouched budget and accepts them all.
    let jobs: Vec<Value> = (0..200).map(|_| job("fast", "t200", &tides())).collect();
    let ids = h.submit_all(&jobs).await;
    assert_eq!(ids.len(), 200);
    let mut succeeded = 0;
    let mut refused = 0;
    for id in &ids {
        let job = h.wait(*id).await;
        match job["status"].as_str() {
            Some("succeeded") => succeeded += 1,
            Some("failed") => {
                refused += 1;
                assert_eq!(job["error"]["kind"], "budget_exceeded", "{job:#}");
                let message = job["error"]["message"].as_str().unwrap();
                for part in [
                    "budget \"fifty\" (tenant acme, team t200, per day) is exhausted: limit $0.00072,",
                    &format!("this job may cost up to {}", PicoUsd(estimate)),
                    &format!("; it resets at {}", tomorrow()),
                ] {
                    assert!(message.contains(part), "{part:?} not in {message}");
                }
                assert!(job["attempts"].as_array().unwrap().is_empty(), "{job:#}");
            }
            other => panic!("unexpected {other:?}: {job:#}"),
        }
    }
    assert_eq!(succeeded + refused, 200);
    println!("{succeeded} of 200 succeeded, {refused} refused by the budget");
    let spent = h
        .count("SELECT COALESCE(SUM(amount_pico_usd), 0) FROM costs WHERE team_tag = 't200'")
        .await;
    assert_eq!(spent, succeeded * actual);
    // The reservations held: never more than the limit, whatever ran at once.
    assert!(spent <= limit.0, "spent {spent} > limit {}", limit.0);
    // A refusal means spent + reserved > limit − estimate, and every reserved job then cost
    // `actual`, so at least 50 ran; at most limit / actual = 52.7 could.
    assert!(
        (50..=limit.0 / actual).contains(&succeeded),
        "{succeeded} succeeded"
    );

    // The running totals match the cost records exactly, and nothing stays reserved.
    let budgets = h.client.budgets().await.unwrap();
    let fifty = find(&budgets, "fifty");
    assert_eq!(fifty["spent_pico_usd"], spent, "{fifty:#}");
    assert_eq!(fifty["reserved_pico_usd"], 0, "{fifty:#}");
    assert_eq!(fifty["remaining_pico_usd"], limit.0 - spent, "{fifty:#}");
    assert_eq!(fifty["thresholds_crossed"], json!([0.8]), "{fifty:#}");
    assert_eq!(h.count("SELECT COUNT(*) FROM budget_reservations").await, 0);
    h.stop().await;
}

async fn a_downgrade_budget_sends_the_overflow_to_the_cheaper_route(backend: Backend) {
    // Room for one gpt-4o job's estimate and five gpt-4o-mini ones.
    let limit = PicoUsd(cost(GPT_4O, 32) + 5 * cost(MINI, 32));
    let h = Harness::start_with(
        backend,
        |config| {
            config.budgets.push(budget(
                "cheap-after-one",
                "d",
                limit,
                OnExceed::Downgrade("fast".into()),
            ))
        },
        true,
    )
    .await;
    let mut jobs = Vec::new();
    // One at a time, so which job lands where is known: "smart" is gpt-4o first.
    for _ in 0..7 {
        let id = h.submit_job(&job("smart", "d", &tides())).await;
        jobs.push((id, h.wait(id).await));
    }
    let (first, _) = &jobs[0];
    assert_eq!(
        cost_row(&h, *first).await,
        ("gpt-4o".into(), cost(GPT_4O, 27))
    );
    // Spent 227.5 µ$: another gpt-4o (240 µ$) no longer fits; gpt-4o-mini (14.4) does, six
    // times (227.5 + 6 × 13.65 = 309.4 ≤ 312), then not even that.
    for (id, job) in &jobs[1..7] {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            cost_row(&h, *id).await,
            ("gpt-4o-mini".into(), cost(MINI, 27))
        );
        let because = job["attempts"][0]["chosen_because"].as_str().unwrap();
        assert!(
            because.contains(
                "downgraded from route \"smart\" to \"fast\" by budget \"cheap-after-one\""
            ),
            "{because}"
        );
    }
    // Then not even gpt-4o-mini fits what is spent, on either route: the budget is spent
    // for the eighth job, which is refused before it is recorded.
    let jobs_before = h.count("SELECT COUNT(*) FROM jobs").await;
    match h.client.submit(&job("smart", "d", &tides())).await {
        Err(sluice::client::ClientError::Api {
            status: 402,
            message,
            ..
        }) => assert!(
            message
                .contains("budget \"cheap-after-one\" (tenant acme, team d, per day) is exhausted")
                && message.contains(&format!(
                    "this job may cost up to {}",
                    PicoUsd(cost(MINI, 32))
                )),
            "{message}"
        ),
        other => panic!("expected a 402, got {other:?}"),
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, jobs_before);
    let spent = h
        .count("SELECT SUM(amount_pico_usd) FROM costs WHERE team_tag = 'd'")
        .await;
    assert_eq!(spent, cost(GPT_4O, 27) + 6 * cost(MINI, 27));
    assert!(spent <= limit.0);
    h.stop().await;
}

async fn a_spent_budget_is_refused_at_the_api_shown_and_reset_by_the_next_period(backend: Backend) {
    // Punctuation is where estimates fall short: 100 "!" are estimated at 25 + 7 tokens and
    // counted by the simulator as 100 + 7. The job fits its estimate exactly, then costs
    // more: the budget is spent, past its limit.
    let bangs = "!".repeat(100);
    let estimate = cost(MINI, 32);
    let actual = cost(MINI, 107);
    let limit = PicoUsd(estimate);
    let tide: sluice::job::ChatRequest =
        serde_json::from_value(job("fast", "x", "tide")["request"].clone()).unwrap();
    let h = Harness::start_with(
        backend,
        |config| {
            config
                .budgets
                .push(budget("one-job", "x", limit, OnExceed::Reject));
            // A tag budget without a tenant: each tenant has its own total.
            let mut shared = budget("team-x", "x", PicoUsd(1_000_000_000_000), OnExceed::Reject);
            shared.tenant = None;
            config.budgets.push(shared);
        },
        true,
    )
    .await;
    let first: Uuid = h.submit_job(&job("fast", "x", &bangs)).await;
    assert_eq!(h.wait(first).await["status"], "succeeded");
    assert_eq!(cost_row(&h, first).await.1, actual);

    // Refused at the API, before anything is recorded: 402, OpenAI's error shape.
    let jobs_before = h.count("SELECT COUNT(*) FROM jobs").await;
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(TOKEN)
        .json(&job("fast", "x", "tide"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let body: Value = refused.json().await.unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], "budget_exceeded", "{body:#}");
    assert_eq!(error["type"], "budget_exceeded", "{body:#}");
    assert_eq!(error["budget"], "one-job");
    assert_eq!(error["limit_usd"], limit.to_usd_string());
    assert_eq!(error["spent_usd"], PicoUsd(actual).to_usd_string());
    assert_eq!(error["resets_at"], tomorrow());
    let mini = &h.app.router.route("fast").unwrap().chain[0];
    assert_eq!(
        error["message"],
        format!(
            "budget \"one-job\" (tenant acme, team x, per day) is exhausted: limit {}, spent {} \
             ({} spent + $0.00 reserved by running jobs), and this job may cost up to {}; \
             it resets at {}",
            limit,
            PicoUsd(actual),
            PicoUsd(actual),
            sluice::budgets::estimate(mini, &tide).unwrap(),
            tomorrow()
        )
    );
    // OpenAI's endpoint answers the same, for a request tagged by header.
    let chat = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .header("x-sluice-team", "x")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 402);
    let chat: Value = chat.json().await.unwrap();
    assert_eq!(chat["error"]["code"], "budget_exceeded", "{chat:#}");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, jobs_before);
    // Other teams are not held back by it.
    let other: Uuid = h.submit_job(&job("fast", "y", "tide")).await;
    assert_eq!(h.wait(other).await["status"], "succeeded");

    // GET /v1/budgets: spend over the limit, both thresholds crossed (and recorded once).
    let budgets = h.client.budgets().await.unwrap();
    let one = find(&budgets, "one-job");
    assert_eq!(one["spent_pico_usd"], actual, "{one:#}");
    assert_eq!(one["remaining_pico_usd"], 0, "{one:#}");
    assert_eq!(one["thresholds_crossed"], json!([0.8, 1.0]), "{one:#}");
    assert_eq!(one["resets_at"], tomorrow(), "{one:#}");
    assert!(one["percent"].as_f64().unwrap() > 100.0, "{one:#}");
    assert_eq!(find(&budgets, "team-x")["spent_pico_usd"], actual);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM budget_warnings WHERE budget = 'one-job'")
            .await,
        2
    );
    // Tenants are walls: globex sees its own total of the shared budget, not acme's budget.
    let theirs = h.other_client.budgets().await.unwrap();
    let names: Vec<&str> = theirs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-x"]);
    assert_eq!(theirs["data"][0]["spent_pico_usd"], 0);

    // The next day is a new period: yesterday's spend no longer counts.
    let old_start = one["period_start"].as_str().unwrap().to_string();
    h.app.budgets.shift_clock(chrono::TimeDelta::days(1));
    let next: Uuid = h.submit_job(&job("fast", "x", &bangs)).await;
    assert_eq!(h.wait(next).await["status"], "succeeded");
    let budgets = h.client.budgets().await.unwrap();
    let one = find(&budgets, "one-job");
    assert_ne!(one["period_start"], old_start.as_str(), "{one:#}");
    assert_eq!(one["period_start"], tomorrow(), "{one:#}");
    assert_eq!(one["spent_pico_usd"], actual, "{one:#}");
    // Both jobs' costs are on record; only the new period's counts against the budget.
    assert_eq!(
        h.count("SELECT SUM(amount_pico_usd) FROM costs WHERE team_tag = 'x'")
            .await,
        2 * actual
    );
    assert_eq!(
        h.count("SELECT SUM(spent_pico_usd) FROM budget_totals WHERE budget = 'one-job'")
            .await,
        2 * actual
    );
    h.stop().await;
}

async fn a_budget_without_room_for_the_next_job_refuses_it_before_recording_it(backend: Backend) {
    // Room for exactly one estimate. The job then costs less than it reserved (27 prompt
    // tokens counted, 32 estimated), so its budget is not at its limit, yet no job of this
    // size fits any more: the budget is spent for it, and the API says so before recording it.
    let estimate = cost(MINI, 32);
    let h = Harness::start_with(
        backend,
        |config| {
            config
                .budgets
                .push(budget("one-job", "n", PicoUsd(estimate), OnExceed::Reject))
        },
        true,
    )
    .await;
    let first = h.submit_job(&job("fast", "n", &tides())).await;
    assert_eq!(h.wait(first).await["status"], "succeeded");
    let spent = cost(MINI, 27);
    assert_eq!(cost_row(&h, first).await.1, spent);

    let jobs_before = h.count("SELECT COUNT(*) FROM jobs").await;
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(TOKEN)
        .json(&job("fast", "n", &tides()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body:#}");
    assert_eq!(body["error"]["spent_usd"], PicoUsd(spent).to_usd_string());
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("this job may cost up to {}", PicoUsd(estimate))),
        "{message}"
    );
    // The same through OpenAI's endpoint; neither recorded a job.
    let chat = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .header("x-sluice-team", "n")
        .json(&job("fast", "n", &tides())["request"])
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 402);
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, jobs_before);
    h.stop().await;
}

async fn a_job_its_budget_refuses_at_its_attempt_answers_402(backend: Backend) {
    // A job held by a provider that never answers keeps its reservation, which fills the
    // budget; a request that fits the budget on its own is accepted, then refused by the
    // budget at its attempt, and OpenAI's endpoint answers that with the 402 of a refusal at
    // submission, plain or streamed, never a 5xx an SDK would retry.
    let held = format!("{} [sim fail=timeout]", tides());
    let held_request: sluice::job::ChatRequest =
        serde_json::from_value(job("fast", "w", &held)["request"].clone()).unwrap();
    let h = Harness::start_with(
        backend,
        |config| {
            let resolved = config.clone().resolve().unwrap();
            let router = sluice::router::Router::new(&resolved, reqwest::Client::new(), None);
            let mini = &router.route("fast").unwrap().chain[0];
            let limit = sluice::budgets::estimate(mini, &held_request).unwrap();
            config
                .budgets
                .push(budget("held", "w", limit, OnExceed::Reject));
            // The held call outlasts the test's requests (the lease outlasts the call).
            for provider in config.providers.values_mut() {
                provider.timeout = std::time::Duration::from_secs(15);
            }
            config.queue.visibility_timeout = std::time::Duration::from_secs(30);
        },
        true,
    )
    .await;
    let holder = h.submit_job(&job("fast", "w", &held)).await;
    common::eventually(
        &format!("job {holder} to reserve its estimate"),
        std::time::Duration::from_secs(10),
        async || h.count("SELECT COUNT(*) FROM budget_reservations").await > 0,
    )
    .await;
    for stream in [false, true] {
        let mut request = job("fast", "w", "tide")["request"].clone();
        request["stream"] = json!(stream);
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", h.base_url))
            .bearer_auth(TOKEN)
            .header("x-sluice-team", "w")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 402, "stream: {stream}");
        let id: Uuid = response.headers()[sluice::api::JOB_ID_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "budget_exceeded", "{body:#}");
        assert_eq!(body["error"]["code"], "budget_exceeded", "{body:#}");
        let refused = h.client.get(id, None).await.unwrap();
        assert_eq!(refused["error"]["kind"], "budget_exceeded", "{refused:#}");
        assert_eq!(refused["error"]["status"], 402, "{refused:#}");
    }
    h.stop().await;
}
