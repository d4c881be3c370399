//! The official OpenAI, Anthropic and Gemini Python SDKs against the simulator, and the
//! OpenAI SDK against Sluice itself.
//!
//! The simulator promises that the providers' own SDKs accept everything it serves; this
//! test holds it to that by running `tests/sdk/check_sim.py` (plain, streamed, tool and JSON
//! calls, every error class, and each family's batch API through the SDK's batch calls) against a simulator on a random port. The interpreter, with
//! the SDKs of `tests/sdk/requirements.txt` installed, is named by `SLUICE_SDK_PYTHON`;
//! `scripts/test.sh` builds that virtualenv and sets it.

use crate::common;

use sluice::sim::{self, SimConfig};
use std::process::{Output, Stdio};
use std::time::Duration;

/// The interpreter with the official SDKs installed.
fn sdk_python() -> String {
    std::env::var("SLUICE_SDK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SLUICE_SDK_PYTHON is not set: run the suite with scripts/test.sh, which installs \
             the official SDKs (tests/sdk/requirements.txt) into target/sdk-venv and points \
             SLUICE_SDK_PYTHON at its python"
        )
    })
}

/// Runs `tests/sdk/SCRIPT` with `args`, within 3 minutes.
async fn run_script(script: &str, args: &[&str]) -> Output {
    let python = sdk_python();
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 3 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {python} (SLUICE_SDK_PYTHON): {e}"))
}

/// Runs `tests/sdk/SCRIPT` and requires it to succeed and say its checks passed; returns
/// what it printed.
async fn run_checks(script: &str, args: &[&str]) -> String {
    let output = run_script(script, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    stdout
}

/// An application written for OpenAI, pointed at Sluice, on each queue backend.
async fn the_openai_sdk_runs_unchanged_against_sluice(backend: common::Backend) {
    let h = common::Harness::start(backend).await;
    run_checks("check_sluice.py", &[&h.base_url, common::TOKEN]).await;
    // Every SDK call became a stored, charged job: 3 plain, 3 streamed with usage, 3 without,
    // 1 tool call.
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 10);
    h.stop().await;
}

/// A program written for OpenAI's batch workflow (files, batches, polling, output files),
/// pointed at Sluice, on each queue backend.
async fn the_openai_sdk_batch_workflow_runs_unchanged_against_sluice(backend: common::Backend) {
    let h = common::Harness::start(backend).await;
    run_checks("check_batches.py", &[&h.base_url, common::TOKEN]).await;
    // The 7 successes of the first batch were routed and charged as batch-urgency jobs (the
    // cancelled batch may have run some of its 3 before the cancel).
    let charged = h
        .count(
            "SELECT COUNT(*) FROM costs c JOIN jobs j ON j.id = c.job_id \
             WHERE j.bulk_id IS NOT NULL AND j.urgency = 'batch'",
        )
        .await;
    assert!((7..=10).contains(&charged), "{charged} cost records");
    h.stop().await;
}

on_both_backends!(
    the_openai_sdk_runs_unchanged_against_sluice,
    the_openai_sdk_batch_workflow_runs_unchanged_against_sluice,
);

#[tokio::test]
async fn the_official_sdks_accept_the_simulator() {
    let server = sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            retry_after: Duration::from_millis(50),
            // check_sim.py polls its batches until they end.
            batch_turnaround: Duration::from_millis(500),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator starts");
    let root = format!("http://{}", server.local_addr());
    let stdout = run_checks("check_sim.py", &[&root]).await;
    println!("{stdout}");
    let stats = server.stats();
    assert!(stats.openai_requests > 0 && stats.anthropic_requests > 0 && stats.gemini_requests > 0);
    for family in [
        sim::Family::OpenAi,
        sim::Family::Anthropic,
        sim::Family::Gemini,
    ] {
        assert!(server.batches_created(family) >= 2, "{family:?}");
    }
    server.shutdown().await;
}
