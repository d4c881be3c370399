//! The built binary as an operator runs it: `sluice check-config` before a deploy, and
//! `sluice serve` stopped the way deployments stop it (`docker stop`, systemd and Kubernetes
//! send SIGTERM), when it must finish the jobs in flight, as it does on Ctrl-C, rather than
//! die and leave them leased until their visibility timeout.

#![cfg(unix)]

use crate::common::serve::{sluice, Served};
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
    let mut server =
        Served::start(&config(dir.path(), 0), &[], &dir.path().join("serve.log")).await;
    let base = server.base_url.clone();
    let http = reqwest::Client::new();
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
    // Time for the request to reach the slow provider, so the signal lands mid-call (the
    // demo's latency is 1.5 s: the call is still there, which the assertion checks).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!request.is_finished(), "the job should still be running");
    let pid = server.pid().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());

    let exit = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
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
        sluice()
            .args(["check-config", "--config"])
            .arg(&config)
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

/// `sluice serve` with `args` on `config`, its log in `config`'s folder; returns the process
/// and its log once it listens.
async fn serve(config: &std::path::Path, args: &[&str]) -> (Served, Vec<String>) {
    let server = Served::start(config, args, &config.with_file_name("serve.log")).await;
    let log = server.log().lines().map(str::to_string).collect();
    (server, log)
}

/// Runs a client command to its end off the async runtime.
async fn run(command: std::process::Command) -> std::process::Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Every Sluice configuration the container set-up ships (`docker/`, `docker/cluster/`)
/// passes `check-config` with the variables it references set, and `docker-compose.yml`
/// passes each of those variables in: no container starts on a file the binary refuses.
#[test]
fn the_container_configurations_pass_check_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let mut files: Vec<_> = ["docker", "docker/cluster"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let config: toml::Value = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut variables = Vec::new();
        referenced_variables(&config, &mut variables);
        let mut check = sluice();
        check.args(["check-config", "--config"]).arg(&file);
        for name in &variables {
            assert!(
                compose.contains(&format!("{name}: ${{{name}")),
                "docker-compose.yml does not pass {name}, which {} needs",
                file.display()
            );
            check.env(name, "set-by-the-test");
        }
        let output = check.output().unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The names of the `${NAME}` references in `value`'s strings, comments left aside.
fn referenced_variables(value: &toml::Value, names: &mut Vec<String>) {
    match value {
        toml::Value::String(text) => names.extend(
            text.split("${")
                .skip(1)
                .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string())),
        ),
        toml::Value::Array(items) => items
            .iter()
            .for_each(|item| referenced_variables(item, names)),
        toml::Value::Table(table) => table
            .values()
            .for_each(|item| referenced_variables(item, names)),
        _ => {}
    }
}

/// A misspelt key, an unset variable and an unknown route are all listed in one run, each
/// with the nearest known name; and no part of a secret is ever named, neither a fragment of
/// a variable's value that looks like a reference nor a line that is not TOML.
#[test]
fn check_config_lists_every_problem_and_no_part_of_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sluice.example.toml"))
            .unwrap();
    let text = example
        .replace(
            "token = \"sk-sluice-demo\"",
            "token = \"${SLUICE_TEST_TOKEN}\"",
        )
        .replace(
            "realtime = { concurrency = 64 }",
            "realtime = { concurency = 64 }",
        )
        + "\n[[tenants]]\nname = \"other\"\ntoken = \"${SLUICE_TEST_UNSET}\"\n\n\
           [routes.cheap]\ndeployments = [\"gpt-4o-mni\"]\n";
    assert!(
        text.contains("concurency"),
        "the example has pools.realtime"
    );
    std::fs::write(&path, text).unwrap();
    let check = sluice()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("SLUICE_TEST_TOKEN", "sk-SECRETPART${fragment}")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{stderr}");
    for expected in [
        "pools.realtime.concurency: unknown key `concurency`; did you mean `concurrency`?",
        "tenants[1].token: environment variable SLUICE_TEST_UNSET is not set",
        "routes.cheap[0]: unknown deployment \"gpt-4o-mni\"; did you mean `gpt-4o-mini`?",
    ] {
        assert!(stderr.contains(expected), "{expected} not in {stderr}");
    }
    assert!(stderr.contains("has 3 problem(s)"), "{stderr}");
    assert!(
        !stderr.contains("fragment") && !stderr.contains("SECRETPART"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "[[tenants]]\nname = \"acme\"\ntoken = \"sk-SECRETPART-unterminated\n",
    )
    .unwrap();
    let check = sluice()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{stderr}");
    assert!(stderr.contains("sluice.toml:3:"), "{stderr}");
    assert!(!stderr.contains("SECRETPART"), "{stderr}");
}

/// A PostgreSQL `server.database`: check-config names it when the queue is the embedded one
/// (a table of a SQLite store) or its scheme is unknown, and `serve` and `migrate` that
/// cannot reach the server say which database they could not reach; the password is in none
/// of what they print.
#[test]
fn a_postgres_database_is_checked_and_named_without_its_password() {
    const PASSWORD: &str = "pg-SECRET-word";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sluice.example.toml"))
            .unwrap();
    let with_database = |database: &str, queue_url: bool| {
        let mut text = example.replace(
            "database = \"sluice.db\"",
            &format!("database = \"{database}\""),
        );
        if queue_url {
            text = text.replace("# url = \"amqp://", "url = \"amqp://");
        }
        assert!(text.contains(database) && (!queue_url || text.contains("\nurl = ")));
        std::fs::write(&path, text).unwrap();
    };
    let postgres = format!("postgres://sluice:{PASSWORD}@127.0.0.1:5432/sluice");
    // Nothing listens on port 1: the connection is refused at once.
    let unreachable = format!("postgres://sluice:{PASSWORD}@127.0.0.1:1/sluice");
    let cases = [
        (
            format!("mysql://root:{PASSWORD}@127.0.0.1/sluice"),
            true,
            &["check-config"][..],
            "server.database: unknown scheme `mysql://`",
        ),
        (
            postgres.clone(),
            false,
            &["check-config"][..],
            "server.database: a PostgreSQL store needs the rabbitmq queue backend",
        ),
        (
            unreachable.clone(),
            true,
            &["migrate"][..],
            "cannot connect to the database postgres://sluice:***@127.0.0.1:1/sluice",
        ),
        (
            unreachable.clone(),
            true,
            &["serve", "--no-workers"][..],
            "cannot connect to the database postgres://sluice:***@127.0.0.1:1/sluice",
        ),
    ];
    for (database, queue_url, command, expected) in cases {
        with_database(&database, queue_url);
        let output = sluice()
            .args(command)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{command:?}: {printed}");
        assert!(
            printed.contains(expected),
            "{command:?}: {expected} not in {printed}"
        );
        assert!(!printed.contains(PASSWORD), "{command:?}: {printed}");
    }
    with_database(&postgres, true);
    let check = sluice()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The client commands reach the server and tenant of the `--config` file (another port,
/// another token) with nothing else given; a bulk is found by its id, its name and, for one
/// the Batch API made, its batch id. The server's log has no colour codes when it is not a
/// terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_use_the_config_and_find_bulks_by_any_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 0);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("sk-sluice-demo", "sk-from-the-config")
        .replace("latency = \"1500ms\"", "latency = \"0ms\"");
    std::fs::write(&path, &text).unwrap();
    let (server, log) = serve(&path, &[]).await;
    // The clients read the server's address from the same file: write the port it bound.
    let bound = server.base_url.trim_start_matches("http://");
    std::fs::write(&path, text.replace("127.0.0.1:0", bound)).unwrap();
    assert!(
        log.iter().all(|line| !line.contains('\u{1b}')),
        "colour codes in a redirected log: {log:?}"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("provider simulator started")),
        "{log:#?}"
    );

    let mut submit = sluice();
    submit
        .args(["submit", "Hello from the config", "--wait", "--config"])
        .arg(&path);
    let submitted = run(submit).await;
    let stdout = String::from_utf8_lossy(&submitted.stdout);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let job: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");

    // A bulk by name, then by id.
    let lines = dir.path().join("lines.jsonl");
    std::fs::write(
        &lines,
        "{\"custom_id\": \"a\", \"body\": {\"model\": \"fast\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}}\n",
    )
    .unwrap();
    let mut bulk = sluice();
    bulk.args([
        "bulk",
        "submit",
        "--name",
        "nightly run",
        "--urgency",
        "standard",
        "--config",
    ])
    .arg(&path)
    .arg(&lines);
    let bulk = run(bulk).await;
    assert!(
        bulk.status.success(),
        "{}",
        String::from_utf8_lossy(&bulk.stderr)
    );
    let bulk_id = String::from_utf8_lossy(&bulk.stdout).trim().to_string();
    let uuid: uuid::Uuid = bulk_id.parse().unwrap();
    for id in [
        "nightly run".to_string(),
        bulk_id.clone(),
        format!("batch_{}", uuid.simple()),
    ] {
        let mut status = sluice();
        status.args(["bulk", "status", &id, "--config"]).arg(&path);
        let status = run(status).await;
        assert!(
            status.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(answer["id"], bulk_id.as_str(), "{id}: {answer}");
        assert_eq!(answer["name"], "nightly run", "{id}: {answer}");
    }
    let mut unknown = sluice();
    unknown
        .args(["bulk", "status", "no such bulk", "--config"])
        .arg(&path);
    let unknown = run(unknown).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no bulk no such bulk"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

/// An API without workers makes no provider call, so it starts no simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_workers_starts_no_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 0);
    let (_server, log) = serve(&path, &["--no-workers"]).await;
    assert!(
        log.iter().all(|line| !line.contains("simulator")),
        "{log:#?}"
    );
}

/// A worker-only process has no API, so `--health-listen` serves its health alone: live and
/// ready while its queue and store are, ready no longer while its broker cannot be reached,
/// and nothing of the API beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_health_when_asked() {
    let http = reqwest::Client::new();
    let get = |base: &str, path: &str| http.get(format!("{base}{path}")).send();

    // The embedded queue: the worker is ready once its store is open.
    let dir = tempfile::tempdir().unwrap();
    let mut worker =
        Served::start_worker(&config(dir.path(), 0), &[], &dir.path().join("worker.log")).await;
    let base = worker.base_url.clone();
    let base = &base;
    let live = get(base, "/healthz").await.unwrap();
    assert_eq!(live.status(), 200);
    let live: Value = live.json().await.unwrap();
    assert_eq!(live["status"], "ok", "{live}");
    let ready = get(base, "/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (
            &ready["status"],
            &ready["queue_ready"],
            &ready["store_writable"]
        ),
        (&json!("ready"), &json!(true), &json!(true)),
        "{ready}"
    );
    let jobs = get(base, "/v1/jobs/00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
    assert_eq!(jobs.status(), 404, "the health address serves no API");
    // SIGTERM still ends it cleanly, its health server with it.
    let pid = worker.pid().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), worker.child.wait())
        .await
        .expect("sluice worker did not exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status after SIGTERM: {exit}");

    // A broker that accepts connections and never answers: alive, not ready, saying why.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 0);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "# url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        &format!(
            "url = \"amqp://guest:guest@{}/%2f\"",
            silent.local_addr().unwrap()
        ),
    );
    assert!(text.contains(&silent.local_addr().unwrap().to_string()));
    std::fs::write(&path, text).unwrap();
    let worker = Served::start_worker(&path, &[], &dir.path().join("worker.log")).await;
    let base = &worker.base_url;
    let live = get(base, "/healthz").await.unwrap();
    assert_eq!(live.status(), 200);
    let live: Value = live.json().await.unwrap();
    assert_eq!(live["queue_available"], false, "{live}");
    let ready = get(base, "/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["queue_ready"], false, "{ready}");
    assert_eq!(ready["store_writable"], true, "{ready}");
    assert!(
        ready["problems"][0]
            .as_str()
            .is_some_and(|problem| problem.contains("rabbitmq")),
        "{ready}"
    );
    drop(silent);
}

/// `sluice probe`, the image's health check: it succeeds on a ready process's `/readyz`,
/// printing the answer, and fails, naming the status, on any answer that is not a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_succeeds_only_on_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = serve(&config(dir.path(), 0), &["--no-workers"]).await;
    let mut ready = sluice();
    ready.args(["probe", &format!("{}/readyz", server.base_url)]);
    let ready = run(ready).await;
    assert!(ready.status.success(), "{ready:?}");
    let body: Value = serde_json::from_slice(&ready.stdout).unwrap();
    assert_eq!(body["status"], "ready", "{body}");

    // The API without a token answers 401: not a success.
    let mut refused = sluice();
    refused.args(["probe", &format!("{}/v1/budgets", server.base_url)]);
    let refused = run(refused).await;
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

/// Relative paths in a config file are taken from its folder, not the current directory:
/// `jobs list` run from elsewhere finds the definitions and the database beside the file.
#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("emb");
    std::fs::create_dir_all(folder.join("jobs")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sluice.example.toml"))
            .unwrap();
    assert!(example.contains("database = \"sluice.db\""));
    std::fs::write(
        folder.join("sluice.toml"),
        example + "\n[scheduler]\ndir = \"jobs\"\n",
    )
    .unwrap();
    std::fs::write(
        folder.join("jobs/nightly.toml"),
        "schedule = \"0 2 * * *\"\ntenant = \"demo\"\n[request]\nmodel = \"fast\"\n\
         messages = [{ role = \"user\", content = \"Summarise the day.\" }]\n",
    )
    .unwrap();
    let list = sluice()
        .args(["jobs", "list", "--config", "emb/sluice.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(stdout.contains("nightly"), "{stdout}");
    assert!(folder.join("sluice.db").exists());
    assert!(!dir.path().join("sluice.db").exists());
}

/// A reader that goes away (`sluice budgets --format json | head`) ends a command quietly:
/// no panic, no error, success.
#[test]
fn a_closed_pipe_ends_printing_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), 8080);
    for args in [
        &["prices", "--format", "json"][..],
        &["budgets", "--format", "json"],
        &["costs", "--format", "csv"],
        &["check-config"],
    ] {
        let mut child = sluice()
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader closes before the command prints.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

/// The demo removes its temporary database when it ends, and explains what a reader would
/// ask about: the `[sim …]` prefix of a prompt and why a job ran on the tier it did.
#[test]
fn the_demo_cleans_up_and_explains_itself() {
    let temp = tempfile::tempdir().unwrap();
    let demo = sluice()
        .arg("demo")
        .env("TMPDIR", temp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        stdout.contains("[sim fail=429] makes the first call answer 429"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ran real-time: deployment gpt-4o has no batch tier"),
        "{stdout}"
    );
    assert!(
        stdout.contains("routes.writer.deadline.standard = \"10m\""),
        "{stdout}"
    );
}

/// Every argument a user types has help text, and the urgencies and formats list their
/// possible values.
#[test]
fn help_explains_every_argument() {
    let help = |args: &[&str]| {
        let output = sluice().args(args).arg("--help").output().unwrap();
        assert!(output.status.success(), "{args:?}");
        // Whitespace collapsed: clap puts long help on the next line when it does not fit.
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let worker = help(&["worker"]);
    assert!(
        worker.contains("[possible values: realtime, standard, batch]"),
        "{worker}"
    );
    assert!(
        worker.contains("--health-listen <HEALTH_LISTEN> Serve GET /healthz"),
        "{worker}"
    );
    let get = help(&["get"]);
    assert!(get.contains("<ID> The job's id"), "{get}");
    let run = help(&["jobs", "run"]);
    assert!(run.contains("<NAME> The definition's name"), "{run}");
    let status = help(&["bulk", "status"]);
    assert!(status.contains("<BULK> The bulk: its id"), "{status}");
    let submit = help(&["submit"]);
    for documented in [
        "--model <MODEL> The model",
        "--custom-id <CUSTOM_ID> Your own id",
    ] {
        assert!(submit.contains(documented), "{documented} not in {submit}");
    }
    let sim = help(&["sim"]);
    assert!(sim.contains("--listen <LISTEN> The address"), "{sim}");
    let costs = help(&["costs"]);
    assert!(costs.contains("table") && costs.contains("csv"), "{costs}");
}
