//! The dashboard at `/ui`, driven in headless Chromium as a person would use it: sign in,
//! open each page, read what it shows (a tenant's jobs and never another's, a job's attempts
//! and cost, today's bar on the cost chart), cancel a queued job; screenshots go to the
//! test's folder (`common::browser`). Then what needs no browser: sign-in redirects, the
//! HTML 404 beside the API's JSON one, a tenant refused an operator's page, the store's
//! dashboard reads on both store backends.

use crate::common::browser::Browser;
use crate::common::{eventually, Backend, Harness, TOKEN};
use chrono::DurationRound;
use fantoccini::Locator;
use sluice::config::{OperatorConfig, Secret};
use sluice::job::{JobStatus, Urgency};
use sluice::store::dashboard::JobFilter;
use std::time::Duration;

const OPERATOR_TOKEN: &str = "sk-test-operator";

/// A harness whose configuration has an operator beside its two tenants.
async fn harness(backend: Backend, workers: bool) -> Harness {
    harness_with(backend, workers, |_| {}).await
}

/// [`harness`], its configuration changed by `tweak` too.
async fn harness_with(
    backend: Backend,
    workers: bool,
    tweak: impl FnOnce(&mut sluice::config::Config),
) -> Harness {
    Harness::start_with(
        backend,
        |config| {
            config.operators = vec![OperatorConfig {
                name: "ops".into(),
                token: Secret::new(OPERATOR_TOKEN),
            }];
            tweak(config);
        },
        workers,
    )
    .await
}

/// A job of the harness's `client`'s tenant, with a prompt to find it by.
fn job(prompt: &str) -> serde_json::Value {
    serde_json::json!({
        "urgency": "standard",
        "custom_id": prompt,
        "tags": {"team": "search"},
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    })
}

/// A reqwest client that keeps cookies and does not follow redirects, to read them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_its_own_job_with_attempts_and_cost_and_an_operator_sees_all() {
    let h = harness(Backend::Embedded, true).await;
    let own = h.submit_job(&job("acme-question")).await;
    let other = h
        .other_client
        .submit(&job("globex-question"))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let done = h.wait(own).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let amount = done["cost"]["amount_usd"].as_str().unwrap().to_string();
    let theirs = h
        .other_client
        .wait(other, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(theirs["status"], "succeeded", "{theirs:#}");

    let browser = Browser::start(&h.base_url, h.dir.path()).await;
    // A page asked for before signing in leads to the sign-in form, then back to it.
    browser.open("/ui/jobs").await;
    assert!(
        browser.path().await.starts_with("/ui/login"),
        "{}",
        browser.path().await
    );
    browser.sign_in(TOKEN).await;
    assert_eq!(browser.path().await, "/ui/jobs");
    let list = browser.wait_for_text("acme-question").await;
    assert!(list.contains("succeeded"), "{list}");
    assert!(
        !list.contains("globex-question"),
        "a tenant sees another tenant's job: {list}"
    );
    browser.screenshot("jobs-tenant").await;

    // The job's page: its attempt with why its deployment was chosen, and its cost.
    // The job links to its page.
    browser.click(&format!("a[href='/ui/jobs/{own}']")).await;
    let page = browser.wait_for_text("Attempts").await;
    let attempt = &done["attempts"][0];
    for expected in [
        attempt["deployment"].as_str().unwrap(),
        attempt["key_id"].as_str().unwrap(),
        attempt["chosen_because"].as_str().unwrap(),
        &format!("${amount}"),
        "acme-question",
    ] {
        assert!(
            page.contains(expected),
            "the job page lacks {expected:?}: {page}"
        );
    }
    let rows = browser
        .client
        .find_all(Locator::Css("table.attempts tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), done["attempts"].as_array().unwrap().len());
    browser.screenshot("job").await;

    // Another tenant's job is not found, as on the API.
    browser.open(&format!("/ui/jobs/{other}")).await;
    browser.wait_for_text("No job").await;

    // Signed out, then in as the operator: both tenants' jobs, with a tenant column.
    browser.sign_out().await;
    browser.sign_in(OPERATOR_TOKEN).await;
    browser.open("/ui/jobs").await;
    let all = browser.wait_for_text("globex-question").await;
    assert!(all.contains("acme-question"), "{all}");
    assert!(all.contains("globex"), "{all}");
    browser.screenshot("jobs-operator").await;
    // The operator reads another tenant's job page too.
    browser.open(&format!("/ui/jobs/{other}")).await;
    browser.wait_for_text("globex-question").await;
    // And filters by tenant.
    browser.open("/ui/jobs?tenant=acme").await;
    let filtered = browser.wait_for_text("acme-question").await;
    assert!(!filtered.contains("globex-question"), "{filtered}");
    browser.close().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_cost_chart_show_todays_work() {
    let h = harness_with(Backend::Embedded, true, |config| {
        config.budgets.push(sluice::budgets::BudgetConfig {
            name: "search-daily".into(),
            tenant: Some("acme".into()),
            user: None,
            team: Some("search".into()),
            feature: None,
            period: sluice::budgets::Period::Day,
            limit_usd: "5.00".into(),
            on_exceed: sluice::budgets::OnExceed::Reject,
            warn_at: vec!["0.8".into()],
        })
    })
    .await;
    let ids = h.submit_all(&[job("one"), job("two"), job("three")]).await;
    for id in &ids {
        assert_eq!(h.wait(*id).await["status"], "succeeded");
    }
    let browser = Browser::start(&h.base_url, h.dir.path()).await;
    browser.sign_in(TOKEN).await;
    assert_eq!(browser.path().await, "/ui");

    // The overview counts the three in the last hour and draws them in this minute's bar.
    let overview = browser.wait_for_text("Succeeded").await;
    assert!(overview.contains("Tenant acme"), "{overview}");
    let drawn = eventually("the overview's chart", Duration::from_secs(15), async || {
        let finished = browser
            .run(
                "const c = Chart.getChart(document.querySelector('canvas[data-chart=finished-chart]')); \
                 if (!c) return null; \
                 const s = c.data.datasets.find(d => d.label === 'succeeded'); \
                 return s.data.reduce((a, b) => a + b, 0);",
            )
            .await;
        finished.as_i64()
    })
    .await;
    assert_eq!(drawn, 3, "succeeded jobs in the last hour's chart");
    browser.screenshot("overview").await;

    // The cost chart has today's bar, of the model the jobs ran on.
    browser.open("/ui/costs").await;
    browser.wait_for_text("Spend per day").await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let bar = eventually("the cost chart", Duration::from_secs(15), async || {
        let bar = browser
            .run(
                "const c = Chart.getChart(document.querySelector('canvas[data-chart=cost-chart]')); \
                 if (!c) return null; \
                 const last = c.data.labels.length - 1; \
                 return {day: c.data.labels[last], \
                         series: c.data.datasets.map(d => d.label), \
                         today: c.data.datasets.reduce((a, d) => a + Number(d.data[last]), 0)};",
            )
            .await;
        (!bar.is_null()).then_some(bar)
    })
    .await;
    assert_eq!(bar["day"], today.as_str(), "{bar}");
    assert!(
        bar["today"].as_f64().unwrap() > 0.0,
        "today's bar is empty: {bar}"
    );
    assert!(
        bar["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("gpt-4o-mini")),
        "{bar}"
    );
    let costs = browser.text().await;
    let total = h.client.get(ids[0], None).await.unwrap();
    assert!(costs.contains("gpt-4o-mini"), "{costs}");
    assert!(total["cost"].is_object());
    browser.screenshot("costs").await;

    // The providers and budgets pages show the deployments and say what applies.
    browser.open("/ui/providers").await;
    let providers = browser.wait_for_text("Deployments").await;
    assert!(providers.contains("closed"), "{providers}");
    assert!(
        !providers.contains("sk-sim"),
        "a provider key's secret on the page: {providers}"
    );
    browser.screenshot("providers").await;
    // The budget the three jobs counted against, with what they spent, as the API says.
    let budgets = h.client.budgets().await.unwrap();
    let spent = budgets["data"][0]["spent_pico_usd"].as_i64().unwrap();
    assert!(spent > 0, "{budgets:#}");
    browser.open("/ui/budgets").await;
    let page = browser.wait_for_text("search-daily").await;
    let spent = sluice::pricing::PicoUsd(spent).for_people();
    assert!(
        page.contains(&spent),
        "the budget's spend {spent} is not on the page: {page}"
    );
    assert!(page.contains("$5.00"), "{page}");
    browser.screenshot("budgets").await;

    // A bulk of three lines: its progress and counts by state on the bulks page.
    let lines: String = (1..=3)
        .map(|i| {
            format!(
                "{{\"custom_id\": \"line-{i}\", \"body\": {{\"model\": \"gpt-4o-mini\", \
                 \"messages\": [{{\"role\": \"user\", \"content\": \"line {i}\"}}]}}}}\n"
            )
        })
        .collect();
    let uploaded = reqwest::Client::new()
        .post(format!("{}/v1/bulk?name=nightly", h.base_url))
        .bearer_auth(TOKEN)
        .body(lines)
        .send()
        .await
        .unwrap();
    assert!(
        uploaded.status().is_success(),
        "{:?}",
        uploaded.text().await
    );
    browser.open("/ui/bulks").await;
    browser.wait_for_text("nightly").await;
    // The page refreshes itself until the three are done.
    let bulks = browser.wait_for_text("3 / 3").await;
    assert!(bulks.contains("completed"), "{bulks}");
    browser.screenshot("bulks").await;
    browser.close().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_cancelled_from_its_page() {
    // No workers: the job stays queued until the page cancels it.
    let h = harness(Backend::Embedded, false).await;
    let id = h.submit_job(&job("to-cancel")).await;
    let browser = Browser::start(&h.base_url, h.dir.path()).await;
    browser.sign_in(TOKEN).await;
    browser.open(&format!("/ui/jobs/{id}")).await;
    browser.wait_for_text("queued").await;
    // A queued job has a cancel button.
    browser.click("button.danger").await;
    browser.wait_for_text("cancelled").await;
    assert_eq!(h.client.get(id, None).await.unwrap()["status"], "cancelled");
    // A cancelled job has no button any more.
    assert!(browser
        .client
        .find(Locator::Css("button.danger"))
        .await
        .is_err());
    browser.close().await;
    h.stop().await;
}

/// The overview's panel of the queue's own messages: an operator's (the queue holds every
/// tenant's), with the jobs no worker took yet ready on their urgency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_the_queues_messages_and_a_tenant_does_not() {
    let h = harness(Backend::Embedded, false).await;
    h.submit_all(&[job("waiting-1"), job("waiting-2")]).await;
    let overview = |token: &'static str| {
        let url = format!("{}/ui", h.base_url);
        async move {
            let page = http()
                .get(url)
                .header("cookie", format!("sluice_token={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            page.text().await.unwrap()
        }
    };
    let operator = overview(OPERATOR_TOKEN).await;
    let panel = &operator[operator
        .find("On the queue")
        .expect("an operator's overview shows the queue's messages")..];
    let standard = &panel[panel.find(">standard<").expect("a row per urgency")..];
    let ready = standard
        .split("<td class=\"num\">")
        .nth(1)
        .and_then(|cell| cell.split('<').next());
    assert_eq!(ready, Some("2"), "{panel}");
    assert!(panel.contains("Dead-lettered"), "{panel}");
    let tenant = overview(TOKEN).await;
    assert!(tenant.contains("Queued"), "{tenant}");
    assert!(!tenant.contains("On the queue"), "{tenant}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_errors_and_pages_answer_as_a_browser_needs() {
    let h = harness(Backend::Embedded, false).await;
    let http = http();
    let url = |path: &str| format!("{}{path}", h.base_url);

    // Not signed in: to the sign-in form, which comes back to the page.
    let answer = http.get(url("/ui/costs?days=7")).send().await.unwrap();
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/ui/login?next=%2Fui%2Fcosts%3Fdays%3D7"
    );
    // An unknown token: the form again, 401, nothing set.
    let refused = http
        .post(url("/ui/login"))
        .form(&[("token", "sk-wrong"), ("next", "/ui")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused.text().await.unwrap().contains("unknown token"));
    // A tenant's token: a cookie only scripts cannot read and other sites do not send.
    let signed = http
        .post(url("/ui/login"))
        .form(&[("token", TOKEN), ("next", "https://elsewhere.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    assert_eq!(
        signed.headers()["location"],
        "/ui",
        "never sent to another site"
    );
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let get = |path: &str, session: &str| {
        http.get(url(path))
            .header("cookie", session.to_string())
            .send()
    };
    let page = get("/ui", &session).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(!html.contains(TOKEN), "the token is on the page");

    // A tenant on an operator's view (costs split by tenant): 403, in HTML.
    let forbidden = get("/ui/costs?by=tenant", &session).await.unwrap();
    assert_eq!(forbidden.status(), 403);
    assert!(forbidden.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let operator = http
        .post(url("/ui/login"))
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .unwrap();
    let operator = operator.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        get("/ui/costs?by=tenant", &operator)
            .await
            .unwrap()
            .status(),
        200
    );
    // An operator's token opens nothing under /v1.
    let api = http
        .get(url("/v1/costs"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    // Unknown pages: HTML under /ui, the API's JSON elsewhere.
    let missing = get("/ui/nowhere", &session).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(missing.text().await.unwrap().contains("Not found"));
    let api_missing = http.get(url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(api_missing.status(), 404);
    assert_eq!(
        api_missing.json::<serde_json::Value>().await.unwrap()["error"]["type"],
        "not_found"
    );

    // Assets: the content type, cached for a year at their versioned URL.
    let css_url = html
        .split("href=\"")
        .find_map(|rest| rest.split('"').next().filter(|u| u.contains("ui.css")))
        .unwrap()
        .to_string();
    let css = http.get(url(&css_url)).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let chart = http
        .get(url("/ui/assets/chart.umd.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        chart.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(chart.headers()["cache-control"], "no-cache");

    // The CSV is the report of `sluice costs`, with its header.
    let csv = get("/ui/costs.csv?days=7&by=model", &session)
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.text().await.unwrap().starts_with("model,requests,"));

    // Signing out clears the cookie.
    let out = http
        .post(url("/ui/logout"))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // A token no longer known (here: made up) leads back to the form, the cookie cleared.
    let stale = get("/ui", "sluice_token=sk-gone").await.unwrap();
    assert_eq!(stale.status(), 303);
    assert!(stale.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    h.stop().await;
}

/// The dashboard's reads, on one store backend: filters, keyset pages, the per-minute
/// counts and the queue depths.
async fn dashboard_reads(backend: Backend) {
    let h = harness(backend, false).await;
    let store = &h.app.store;
    let first = h.submit_job(&job("a")).await;
    let second = h.submit_job(&job("b")).await;
    let theirs = h.other_client.submit(&job("c")).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let acme = JobFilter {
        tenant: Some("acme".into()),
        ..JobFilter::default()
    };
    let page = store.jobs_page(&acme, None, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        [second, first]
    );
    let older = store.jobs_page(&acme, Some(second), 10).await.unwrap();
    assert_eq!(older.iter().map(|j| j.id).collect::<Vec<_>>(), [first]);
    let everyone = store
        .jobs_page(&JobFilter::default(), None, 2)
        .await
        .unwrap();
    assert_eq!(
        everyone.iter().map(|j| j.id).collect::<Vec<_>>(),
        [theirs, second]
    );
    let queued = JobFilter {
        status: Some(JobStatus::Queued),
        urgency: Some(Urgency::Standard),
        model: Some("gpt-4o-mini".into()),
        ..JobFilter::default()
    };
    assert_eq!(store.jobs_page(&queued, None, 10).await.unwrap().len(), 3);
    let none = JobFilter {
        status: Some(JobStatus::Failed),
        ..JobFilter::default()
    };
    assert!(store.jobs_page(&none, None, 10).await.unwrap().is_empty());
    assert_eq!(
        store.job_tenant(theirs).await.unwrap().as_deref(),
        Some("globex")
    );
    assert!(store
        .job_request("acme", first)
        .await
        .unwrap()
        .unwrap()
        .contains("gpt-4o-mini"));
    assert_eq!(store.job_request("acme", theirs).await.unwrap(), None);

    let depths = store.depths(Some("acme")).await.unwrap();
    assert_eq!(depths.len(), 1);
    assert_eq!(
        (depths[0].urgency, depths[0].queued),
        (Urgency::Standard, 2)
    );
    assert!(depths[0].oldest_queued.is_some());

    h.client.cancel(first).await.unwrap();
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let minutes = store
        .finished_per_minute(Some("acme"), hour_ago)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 1, "{minutes:?}");
    assert_eq!(
        (minutes[0].status, minutes[0].jobs),
        (JobStatus::Cancelled, 1)
    );
    assert!(store
        .finished_per_minute(Some("globex"), hour_ago)
        .await
        .unwrap()
        .is_empty());
    assert!(store.open_provider_batches().await.unwrap().is_empty());
    assert!(store.recent_bulks(None, 5).await.unwrap().is_empty());
    assert!(store
        .recent_bulks(Some("acme"), 5)
        .await
        .unwrap()
        .is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reads_on_sqlite() {
    dashboard_reads(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_reads_on_postgres() {
    dashboard_reads(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_show_each_tenant_its_recurring_jobs_and_their_next_runs() {
    let jobs = tempfile::tempdir().unwrap();
    let request =
        "[request]\nmodel = \"fast\"\nmessages = [{ role = \"user\", content = \"x\" }]\n";
    for (name, tenant) in [("acme-hourly", "acme"), ("globex-nightly", "globex")] {
        std::fs::write(
            jobs.path().join(format!("{name}.toml")),
            format!("tenant = \"{tenant}\"\nschedule = \"0 * * * *\"\n{request}"),
        )
        .unwrap();
    }
    std::fs::write(jobs.path().join("broken.toml"), "schedule = \"not cron\"\n").unwrap();
    let dir = jobs.path().to_path_buf();
    let h = harness_with(Backend::Embedded, false, |config| {
        config.scheduler.dir = dir;
    })
    .await;
    let next_hour = chrono::Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        + chrono::Duration::hours(1);
    let next_hour = next_hour.format("%Y-%m-%d %H:%M:%S").to_string();

    let browser = Browser::start(&h.base_url, h.dir.path()).await;
    browser.open("/ui/schedules").await;
    browser.sign_in(TOKEN).await;
    let page = browser.wait_for_text("acme-hourly").await;
    assert!(
        page.contains(&next_hour),
        "the next run {next_hour} is not shown: {page}"
    );
    assert!(page.contains("never"), "{page}");
    assert!(!page.contains("globex-nightly"), "{page}");
    assert!(!page.contains("broken.toml"), "{page}");
    browser.screenshot("schedules").await;

    browser.sign_out().await;
    browser.sign_in(OPERATOR_TOKEN).await;
    browser.open("/ui/schedules").await;
    let all = browser.wait_for_text("globex-nightly").await;
    assert!(all.contains("acme-hourly"), "{all}");
    assert!(
        all.contains("broken.toml"),
        "an operator sees why a file is not scheduled: {all}"
    );
    browser.close().await;
    h.stop().await;
}
