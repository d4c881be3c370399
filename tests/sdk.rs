//! The official OpenAI, Anthropic and Gemini Python SDKs against the simulator.
//!
//! The simulator promises that the providers' own SDKs accept everything it serves; this
//! test holds it to that by running `tests/sdk/check_sim.py` (plain, streamed, tool and JSON
//! calls, every error class) against a simulator on a random port. The interpreter, with
//! the SDKs of `tests/sdk/requirements.txt` installed, is named by `SLUICE_SDK_PYTHON`;
//! `scripts/test.sh` builds that virtualenv and sets it.

use sluice::sim::{self, SimConfig};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn the_official_sdks_accept_the_simulator() {
    let python = std::env::var("SLUICE_SDK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SLUICE_SDK_PYTHON is not set: run the suite with scripts/test.sh, which installs \
             the official SDKs (tests/sdk/requirements.txt) into target/sdk-venv and points \
             SLUICE_SDK_PYTHON at its python"
        )
    });
    let server = sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            retry_after: Duration::from_millis(50),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator starts");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/check_sim.py");
    let root = format!("http://{}", server.local_addr());
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .arg(&root)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("check_sim.py finishes within 3 minutes")
        .unwrap_or_else(|e| panic!("cannot run {python} (SLUICE_SDK_PYTHON): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check_sim.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    println!("{stdout}");
    let stats = server.stats();
    assert!(stats.openai_requests > 0 && stats.anthropic_requests > 0 && stats.gemini_requests > 0);
    server.shutdown().await;
}
