//! Cost records and reports through a whole Sluice (real queue, store and simulator over
//! HTTP), on both backends: a mixed run over three families with cached tokens, a fallback,
//! batch-tier jobs (one with cached tokens) and an unpriced deployment, checked against
//! hand-computed figures to the pico-dollar; what batch saved, per tier; groupings summing to
//! the total; `GET /v1/costs` scoped to the caller's tenant.

use crate::common;

use common::{prompt, with_batch_tier, Backend, Harness};
use serde_json::json;
use sluice::config::{DeploymentConfig, PriceSetting};
use sluice::costs::{Dimension, Report, ReportQuery, Totals};
use sluice::pricing::PicoUsd;
use uuid::Uuid;

on_all_backends!(a_mixed_run_costs_exactly_what_the_prices_say_and_reports_add_up);

async fn submit(client: &sluice::client::Client, model: &str, text: &str, team: &str) -> Uuid {
    submit_as(client, "standard", model, text, team).await
}

async fn submit_as(
    client: &sluice::client::Client,
    urgency: &str,
    model: &str,
    text: &str,
    team: &str,
) -> Uuid {
    let answer = client
        .submit(&json!({
            "urgency": urgency,
            "tags": {"team": team, "user": "u1", "feature": "costs-test"},
            "request": {"model": model, "messages": [{"role": "user", "content": prompt(text)}]}
        }))
        .await
        .expect("submit accepted");
    answer["id"].as_str().unwrap().parse().unwrap()
}

/// Unit prices in pico-USD per token (= µ$/Mtok): input, cached read, cache write, output.
struct Unit(i64, i64, i64, i64);
const GPT_4O_MINI: Unit = Unit(150_000, 75_000, 150_000, 600_000);
/// gpt-4o-mini's batch tier (catalogue: input 0.075, output 0.30). The catalogue states no
/// batch cached-input price, and its note says cached tokens on the batch tier are charged
/// the batch input price.
const GPT_4O_MINI_BATCH: Unit = Unit(75_000, 75_000, 75_000, 300_000);
const GPT_4O: Unit = Unit(2_500_000, 1_250_000, 2_500_000, 10_000_000);
const SONNET: Unit = Unit(3_000_000, 300_000, 3_750_000, 15_000_000);
/// No cached-input price in the catalogue: cached tokens cost the input price.
const FLASH: Unit = Unit(300_000, 300_000, 300_000, 2_500_000);

#[derive(Debug, Clone, sqlx::FromRow)]
struct Row {
    input: i64,
    cached: i64,
    written: i64,
    output: i64,
    amount: i64,
    price_known: bool,
    /// What the same usage costs at the deployment's real-time price.
    realtime: i64,
    tier: String,
    /// The unit price the record says cached tokens were charged.
    cached_price: i64,
}

impl Unit {
    fn cost(&self, r: &Row) -> i64 {
        (r.input - r.cached - r.written) * self.0
            + r.cached * self.1
            + r.written * self.2
            + r.output * self.3
    }
}

async fn row(h: &Harness, id: Uuid) -> Row {
    sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_as(
        "SELECT input_tokens AS input, cached_tokens AS cached, cache_write_tokens AS written, \
         output_tokens AS output, amount_pico_usd AS amount, price_known, \
         realtime_amount_pico_usd AS realtime, tier, cached_input_price AS cached_price \
         FROM costs WHERE job_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(pool)
    .await
    .unwrap())
}

fn add(a: Totals, b: &Totals) -> Totals {
    Totals {
        requests: a.requests + b.requests,
        input_tokens: a.input_tokens + b.input_tokens,
        cached_tokens: a.cached_tokens + b.cached_tokens,
        cache_write_tokens: a.cache_write_tokens + b.cache_write_tokens,
        output_tokens: a.output_tokens + b.output_tokens,
        cost: a.cost + b.cost,
        batch_saved: a.batch_saved + b.batch_saved,
        fallbacks: a.fallbacks + b.fallbacks,
        fallback_extra: a.fallback_extra + b.fallback_extra,
        unpriced: a.unpriced + b.unpriced,
    }
}

/// The totals of the group whose (only) key is `name` in a report grouped by one dimension.
fn group(report: &Report, name: &str) -> Totals {
    report
        .rows
        .iter()
        .find(|r| r.keys[0].as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no group {name}: {:?}", report.rows))
        .totals
}

async fn a_mixed_run_costs_exactly_what_the_prices_say_and_reports_add_up(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |config| {
            // A model nobody priced, answered by the OpenAI simulator.
            config.deployments.insert(
                "mystery".into(),
                DeploymentConfig {
                    provider: "openai".into(),
                    model: "gpt-mystery".into(),
                    price: Some(PriceSetting::Unknown),
                    drop_unsupported_params: false,
                    default_max_tokens: None,
                    overrides: Default::default(),
                    batch: None,
                    flex: None,
                },
            );
            // `fast` (gpt-4o-mini) gets its batch tier: `batch` jobs on it go through the
            // simulator's OpenAI Batch API; `standard` ones without a deadline stay real-time.
            with_batch_tier(
                config,
                "gpt-4o-mini",
                10,
                std::time::Duration::from_millis(500),
            );
        },
        true,
    )
    .await;

    let fast = submit(
        &h.client,
        "fast",
        "[sim cached=32] Summarise the tides",
        "a",
    )
    .await;
    let writer = submit(&h.client, "writer", "[sim cached=16] Write a haiku", "b").await;
    let flash = submit(&h.client, "flash", "Name three rivers", "a").await;
    let fallback = submit(&h.client, "smart", "[sim fail=429] Explain sluices", "b").await;
    let unpriced = submit(&h.client, "mystery", "Who priced me?", "a").await;
    let other = submit(&h.other_client, "fast", "Globex's own job", "a").await;
    let batch_cached = submit_as(
        &h.client,
        "batch",
        "fast",
        "[sim cached=24] Classify this ticket",
        "a",
    )
    .await;
    let batch_plain = submit_as(&h.client, "batch", "fast", "Tag this ticket", "b").await;
    for id in [
        fast,
        writer,
        flash,
        fallback,
        unpriced,
        batch_cached,
        batch_plain,
    ] {
        let job = h.wait(id).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    let theirs = h
        .other_client
        .wait(other, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(theirs["status"], "succeeded", "{theirs:#}");
    let job = h.wait(fallback).await;
    assert_eq!(job["attempts"][0]["deployment"], "gpt-4o");
    assert_eq!(job["attempts"][1]["deployment"], "gpt-4o-mini");
    for id in [batch_cached, batch_plain] {
        let job = h.wait(id).await;
        assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
        assert_eq!(job["attempts"][0]["tier"], "batch", "{job:#}");
    }

    // Every amount, by hand from the recorded usage and the unit prices.
    let (f, w, g, b, u) = (
        row(&h, fast).await,
        row(&h, writer).await,
        row(&h, flash).await,
        row(&h, fallback).await,
        row(&h, unpriced).await,
    );
    assert_eq!(f.cached, 32, "{f:?}");
    assert!(w.cached > 0, "{w:?}");
    assert_eq!(f.amount, GPT_4O_MINI.cost(&f));
    assert_eq!(w.amount, SONNET.cost(&w));
    assert_eq!(g.amount, FLASH.cost(&g));
    assert_eq!(b.amount, GPT_4O_MINI.cost(&b));
    assert_eq!((u.amount, u.price_known), (0, false));
    let view = h.wait(unpriced).await;
    assert_eq!(view["cost"]["price_known"], false, "{view:#}");
    assert!(
        [&f, &w, &g, &b, &u].iter().all(|r| r.tier == "realtime"),
        "{:?}",
        [&f, &w, &g, &b, &u]
    );
    // The batch jobs: charged at the batch price, cached tokens included (at the batch input
    // price, as the catalogue's note says), with the real-time figure beside the amount.
    let (bc, bp) = (row(&h, batch_cached).await, row(&h, batch_plain).await);
    assert_eq!(bc.cached, 24, "{bc:?}");
    assert_eq!(bp.cached, 0, "{bp:?}");
    for r in [&bc, &bp] {
        assert_eq!(r.tier, "batch", "{r:?}");
        assert_eq!(r.amount, GPT_4O_MINI_BATCH.cost(r), "{r:?}");
        assert_eq!(r.realtime, GPT_4O_MINI.cost(r), "{r:?}");
        assert_eq!(r.cached_price, GPT_4O_MINI_BATCH.1, "{r:?}");
    }
    // Spelled out for the cached one (µ$/Mtok = p$/token). Batch: uncached and cached input
    // both at 0.075, the batch input price (no batch cached price is stated, so none is
    // guessed), output at 0.30. Real-time: input 0.15, cached 0.075, output 0.60.
    assert_eq!(
        bc.amount,
        (bc.input - 24) * 75_000 + 24 * 75_000 + bc.output * 300_000
    );
    assert_eq!(
        bc.realtime,
        (bc.input - 24) * 150_000 + 24 * 75_000 + bc.output * 600_000
    );
    let batch_amount = bc.amount + bp.amount;
    let saved = (bc.realtime - bc.amount) + (bp.realtime - bp.amount);
    assert!(saved > 0);
    // Real-time records cost what their real-time price says: nothing saved.
    assert_eq!(f.realtime, f.amount);
    assert_eq!(b.realtime, b.amount);
    let realtime_amount = f.amount + w.amount + g.amount + b.amount;
    let hand_total = realtime_amount + batch_amount;
    // The fallback: answered by gpt-4o-mini instead of the route's primary gpt-4o.
    let extra = GPT_4O_MINI.cost(&b) - GPT_4O.cost(&b);
    assert!(extra < 0);

    let report = |by: Vec<Dimension>| {
        h.app.store.cost_report(ReportQuery {
            tenant: Some("acme".into()),
            by,
            ..ReportQuery::default()
        })
    };
    let total = report(vec![]).await.unwrap().total;
    assert_eq!(total.cost, PicoUsd(hand_total));
    assert_eq!(total.requests, 7);
    assert_eq!(total.unpriced, 1);
    assert_eq!(total.fallbacks, 1);
    assert_eq!(total.fallback_extra, PicoUsd(extra));
    assert_eq!(total.batch_saved, PicoUsd(saved));
    assert_eq!(
        total.cached_tokens,
        f.cached + w.cached + g.cached + b.cached + u.cached + bc.cached + bp.cached
    );
    let summed: i64 = h
        .count("SELECT SUM(amount_pico_usd) FROM costs WHERE tenant = 'acme'")
        .await;
    assert_eq!(total.cost, PicoUsd(summed));

    // Any grouping sums to the same total, field by field.
    for by in [
        vec![Dimension::Team],
        vec![Dimension::Day],
        vec![Dimension::Team, Dimension::Day],
        vec![Dimension::Tier],
        vec![Dimension::Tier, Dimension::Team, Dimension::Day],
        vec![Dimension::Provider, Dimension::Model, Dimension::Tier],
    ] {
        let grouped = report(by.clone()).await.unwrap();
        let sum = grouped
            .rows
            .iter()
            .fold(Totals::default(), |a, r| add(a, &r.totals));
        assert_eq!(sum, total, "{by:?}");
    }
    let by_team = report(vec![Dimension::Team]).await.unwrap();
    let team = |name: &str| group(&by_team, name);
    assert_eq!(team("a").cost, PicoUsd(f.amount + g.amount + bc.amount));
    assert_eq!(team("a").unpriced, 1);
    assert_eq!(team("a").batch_saved, PicoUsd(bc.realtime - bc.amount));
    assert_eq!(team("b").cost, PicoUsd(w.amount + b.amount + bp.amount));
    assert_eq!(team("b").batch_saved, PicoUsd(bp.realtime - bp.amount));

    // By tier: what batch saved is all on the batch tier, to the pico-dollar.
    let by_tier = report(vec![Dimension::Tier]).await.unwrap();
    let tier = |name: &str| group(&by_tier, name);
    assert_eq!(by_tier.rows.len(), 2, "{:?}", by_tier.rows);
    assert_eq!(tier("batch").requests, 2);
    assert_eq!(tier("batch").cost, PicoUsd(batch_amount));
    assert_eq!(tier("batch").batch_saved, PicoUsd(saved));
    assert_eq!(tier("batch").cached_tokens, 24);
    assert_eq!(tier("realtime").requests, 5);
    assert_eq!(tier("realtime").cost, PicoUsd(realtime_amount));
    assert_eq!(tier("realtime").batch_saved, PicoUsd(0));
    // The rendered batch_saved_usd column shows the same exact figure.
    let csv = by_tier.to_csv();
    let batch_line: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("batch,"))
        .unwrap()
        .split(',')
        .collect();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header.iter().position(|c| *c == "batch_saved_usd").unwrap();
    assert_eq!(batch_line[column], PicoUsd(saved).to_usd_string(), "{csv}");

    // The API shows a tenant its own costs only.
    let mine = h.client.costs("by=tenant,team&since=1h").await.unwrap();
    assert_eq!(mine["total"]["cost_pico_usd"], hand_total);
    assert_eq!(mine["total"]["batch_saved_pico_usd"], saved);
    assert_eq!(
        mine["total"]["cost_usd"],
        PicoUsd(hand_total).to_usd_string()
    );
    assert!(mine["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["tenant"] == "acme"));
    let theirs = h.other_client.costs("by=tenant").await.unwrap();
    assert_eq!(theirs["rows"].as_array().unwrap().len(), 1, "{theirs:#}");
    assert_eq!(theirs["rows"][0]["tenant"], "globex");
    assert_eq!(theirs["total"]["requests"], 1);
    assert_eq!(
        theirs["total"]["cost_pico_usd"],
        row(&h, other).await.amount
    );
    let later = h.client.costs("since=2999-01-01").await.unwrap();
    assert_eq!(later["total"]["requests"], 0);
    let err = h.client.costs("by=colour").await.unwrap_err().to_string();
    assert!(err.contains("unknown grouping \"colour\""), "{err}");

    let csv = reqwest::Client::new()
        .get(format!("{}/v1/costs?by=team&format=csv", h.base_url))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last = csv.lines().last().unwrap();
    assert!(
        last.starts_with("total,7,") && last.ends_with(",1"),
        "{csv}"
    );
    assert!(last.contains(&PicoUsd(hand_total).to_usd_string()), "{csv}");
    h.stop().await;
}
