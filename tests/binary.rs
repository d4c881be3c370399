//! The built binary as an operator runs it: `sluice check-config` before a deploy, and
//! `sluice serve` stopped the way deployments stop it (`docker stop`, systemd and Kubernetes
//! send SIGTERM), when it must finish the jobs in flight, as it does on Ctrl-C, rather than
//! die and leave them leased until their visibility timeout.

#![cfg(unix)]

use serde_json::{json, Value};
use std::time::Duration;

/// The example configuration on a free port and a temporary database, with a simulator slow
/// enough that a job is still at the provider when the signal arrives.
fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sluice.example.toml"))
            .unwrap();
    let database = dir.join("sluice.db");
    let text = example
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "database = \"sluice.db\"",
            &format!("database = {:?}", database.to_str().unwrap()),
        )
        .replace("latency = \"0ms\"", "latency = \"1500ms\"");
    assert!(text.contains(&format!(":{port}\"")) && text.contains("1500ms"));
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_jobs_in_flight_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(config(dir.path(), port))
        .env_remove("SLUICE_CONFIG")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "sluice serve did not start listening");
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    // A request whose job is at the (slow) provider when the signal arrives.
    let request = tokio::spawn({
        let http = http.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            http.post(url)
                .bearer_auth("sk-sluice-demo")
                .json(&json!({"model": "fast",
                              "messages": [{"role": "user", "content": "Still there after SIGTERM?"}]}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!request.is_finished(), "the job should still be running");
    let pid = server.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());

    let exit = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("sluice serve did not exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    let response = request
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"]
        .as_str()
        .is_some_and(|text| !text.is_empty()));

    // The job is stored finished and charged once, nothing left leased.
    let store = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("sluice.db").display()
    ))
    .await
    .unwrap();
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM jobs")
        .fetch_all(&store)
        .await
        .unwrap();
    assert_eq!(statuses, ["succeeded"]);
    let costs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM costs")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(costs, 1);
}

/// `check-config` also reads the recurring jobs: each unusable definition is named with its
/// file and reason, and the check fails, instead of passing and leaving the problem to a
/// line in the server's log.
#[test]
fn check_config_names_every_bad_recurring_job() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 8080);
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[scheduler]\ndir = {:?}\n",
        jobs.to_str().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let definition = |schedule: &str, tenant: &str| {
        format!(
            "schedule = \"{schedule}\"\ntenant = \"{tenant}\"\n[request]\nmodel = \"fast\"\n\
             messages = [{{ role = \"user\", content = \"Summarise the day.\" }}]\n"
        )
    };
    std::fs::write(jobs.join("nightly.toml"), definition("0 2 * * *", "demo")).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("SLUICE_CONFIG")
            .output()
            .unwrap()
    };
    let good = check();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("1 recurring job(s)"));

    std::fs::write(jobs.join("ghost.toml"), definition("0 2 * * *", "ghost")).unwrap();
    std::fs::write(
        jobs.join("typo.toml"),
        definition("0 2 * * *", "demo").replace("tenant", "urgncy = \"batch\"\ntenant"),
    )
    .unwrap();
    let bad = check();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{stderr}");
    assert!(
        stderr.contains("ghost.toml")
            && stderr.contains("tenant \"ghost\" is not in the configuration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("typo.toml") && stderr.contains("urgncy"),
        "{stderr}"
    );
    assert!(stderr.contains("2 recurring job definition(s)"), "{stderr}");
}
