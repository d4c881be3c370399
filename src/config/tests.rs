//! The configuration's tests across sections: every problem listed with its path, secrets
//! never echoed, prices and routes resolved.

use super::providers::credential_bearing_part;
use super::*;
use crate::job::Urgency;
use std::path::PathBuf;
use std::time::Duration;

/// The environment of these tests: `SET` is the one variable set.
fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_string())
}

fn parse(text: &str) -> Config {
    Config::parse(text, "test.toml", &env).unwrap()
}

/// Every problem `sluice check-config` lists for `text`, as it prints them.
fn problems_of(text: &str) -> Vec<String> {
    match Config::from_toml(text, "t.toml", &env) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(err) => panic!("{err}"),
    }
}

/// The problems of a configuration changed in code, as they are printed.
fn listed(config: &Config) -> Vec<String> {
    config.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn builtin_config_is_valid_and_uses_the_simulator() {
    let config = Config::builtin();
    assert!(config.uses_simulator());
    assert_eq!(config.queue.effective_backend(), QueueBackend::Embedded);
    assert!(config.resolve_model("fast").is_some());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let problems = problems_of(
        r#"
        [[tenants]]
        name = "acme"
        token = "${UNSET_VAR}"

        [providers.oa]
        kind = "openai"
        base_url = "ftp://nope"
        keys = []

        [deployments.small]
        provider = "missing"
        model = "m"
        price = { input = 1, output = 2 }

        [routes.smart]
        deployments = ["small", "gpt-5"]
        "#,
    );
    assert!(
        problems.contains(&"routes.smart[1]: unknown deployment \"gpt-5\"".to_string()),
        "{problems:?}"
    );
    assert!(
        problems
            .contains(&"tenants[0].token: environment variable UNSET_VAR is not set".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"deployments.small.provider: unknown provider \"missing\"".to_string()),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("providers.oa.base_url")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"providers.oa.keys: needs at least one key".to_string()),
        "{problems:?}"
    );
}

/// A `base_url` that would carry a credential into every logged and stored address, and
/// a half-written `${`, are refused without echoing what they hold.
#[test]
fn credentials_in_a_base_url_or_a_broken_secret_are_refused_without_echo() {
    for (url, part) in [
        (
            "https://api.example.com/v1?token=QSECRET888",
            "a query string",
        ),
        (
            "https://user:QSECRET888@api.example.com/v1",
            "a user name or password",
        ),
        ("https://api.example.com/v1#QSECRET888", "a fragment"),
    ] {
        let problems = problems_of(&format!(
            r#"
            [[tenants]]
            name = "acme"
            token = "${{UNCLOSED"

            [providers.oa]
            kind = "openai"
            base_url = "{url}"
            keys = [{{ id = "k", secret = "sk-1" }}]
            "#
        ));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("providers.oa.base_url: carries") && p.contains(part)),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("tenants[0].token: has \"${\" that does not start")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .all(|p| !p.contains("QSECRET888") && !p.contains("UNCLOSED")),
            "{problems:?}"
        );
    }
    assert_eq!(credential_bearing_part("https://api.openai.com/v1"), None);
    assert_eq!(credential_bearing_part("http://127.0.0.1:8000/v1"), None);
}

#[test]
fn batch_tier_problems_are_named_by_path() {
    let config = parse(
        r#"
        [batch]
        safety_margin = "10m"
        realtime_reserve = "1h"
        poll = "every minute"

        [providers.oa]
        kind = "openai"
        base_url = "sim"
        keys = [{ id = "k", secret = "s" }]

        [deployments.mini]
        provider = "oa"
        model = "gpt-4o-mini"
        batch = { max_requests = 60000 }

        [deployments.custom]
        provider = "oa"
        model = "my-finetune"
        price = { input = 1, output = 2 }
        batch = { turnaround = "2h" }
        "#,
    );
    let problems = listed(&config);
    let has = |prefix: &str| problems.iter().any(|p| p.starts_with(prefix));
    assert!(
        problems.contains(
            &"deployments.mini.batch.max_requests: 60000 is over openai's limit of 50000 requests per batch"
                .to_string()
        ),
        "{problems:?}"
    );
    assert!(
        has("deployments.custom.batch.price: no batch price"),
        "{problems:?}"
    );
    assert!(
        has("batch.realtime_reserve: 1h must be shorter than batch.safety_margin (10m)"),
        "{problems:?}"
    );
    assert!(
        has("batch.poll: \"every minute\" is not a cron expression"),
        "{problems:?}"
    );
    // The catalogue knows gpt-4o-mini's batch price: no problem there.
    assert!(!has("deployments.mini.batch.price"), "{problems:?}");
    assert_eq!(
        config.deployment_batch_price("mini").map(|p| p.input),
        Some(crate::pricing::MicrosPerMillion(75_000))
    );
}

#[test]
fn route_limit_and_health_problems_are_named_by_path() {
    let mut config = Config::builtin();
    let text = r#"
        deployments = ["gpt-4o", "gpt-4o-mini"]
        strategy = "priority"
        weights = [1]
        max_attempts = 0
        first_token_timeout = "10s"
        stream_idle_timeout = "6s"
        attempt_timeout = "5s"
    "#;
    config
        .routes
        .insert("bad".into(), toml::from_str(text).unwrap());
    config.providers.get_mut("openai").unwrap().keys[0].tokens_per_minute = Some(0);
    config.health.error_threshold = 1.5;
    config.health.min_calls = 50;
    let problems = listed(&config);
    for expected in [
        "routes.bad.weights: has 1 weights for 2 deployments",
        "routes.bad.weights: only a route with strategy = \"weighted\" uses weights",
        "routes.bad.max_attempts: must be at least 1",
        "routes.bad.first_token_timeout: 10s is longer than attempt_timeout (5s)",
        "routes.bad.stream_idle_timeout: 6s is longer than attempt_timeout (5s)",
        "providers.openai.keys[0].tokens_per_minute: must be at least 1",
        "health.error_threshold: 1.5 is not a rate",
        "health.min_calls: 50 is more than health.window (20)",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} not in {problems:?}"
        );
    }
}

#[test]
fn the_builtin_writer_route_falls_back_on_429_or_a_slow_first_token() {
    let config = Config::builtin();
    let writer = &config.routes["writer"];
    assert_eq!(
        writer.deployments,
        ["claude-sonnet", "gpt-4o", "gemini-flash"]
    );
    assert_eq!(writer.strategy, Strategy::Priority);
    assert_eq!(writer.first_token_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        writer.deadline.get(Urgency::Realtime),
        Some(Duration::from_secs(30))
    );
    assert_eq!(config.routes["balanced"].weights, Some(vec![3, 1]));
}

#[test]
fn env_vars_expand_and_secrets_do_not_print() {
    let config = parse(
        r#"
        [[tenants]]
        name = "acme"
        token = "tok-${SET}"
        "#,
    );
    assert_eq!(config.tenants[0].token.expose(), "tok-value");
    assert!(!format!("{:?}", config).contains("tok-value"));
}

#[test]
fn a_lease_shorter_than_a_call_is_refused() {
    let mut config = Config::builtin();
    config.queue.visibility_timeout = Duration::from_secs(30);
    let problems = listed(&config);
    assert!(
        problems.iter().any(|p| p.starts_with(
            "queue.visibility_timeout: 30s must be longer than providers.openai.timeout"
        )),
        "{problems:?}"
    );
}

/// A misspelt key, a wrong type, an unset variable and unknown names are all listed in
/// one run, each with its path and the nearest known name.
#[test]
fn every_problem_of_a_file_is_listed_in_one_run() {
    let text = r#"
        [server]
        listn = "127.0.0.1:9000"

        [pools.realtime]
        concurency = 8

        [retry]
        max_attempts = "five"

        [queue]
        backend = "rabitmq"
        url = "amqp://guest:guest@localhost:5672/%2f"

        [[tenants]]
        name = "acme"
        token = "${SLUICE_TEST_UNSET_TOKEN}"

        [providers.openai]
        kind = "openai"
        base_url = "sim"
        keys = [{ id = "k", secret = "s" }]

        [deployments.gpt-4o-mini]
        provider = "opanai"
        model = "gpt-4o-mini"

        [routes.fast]
        deployments = ["gpt-4o-mni"]
    "#;
    let problems = problems_of(text);
    for expected in [
        "server.listn: unknown key `listn`; did you mean `listen`?",
        "pools.realtime.concurency: unknown key `concurency`; did you mean `concurrency`?",
        "retry.max_attempts: invalid type: string \"five\", expected u32",
        "queue.backend: unknown value `rabitmq`; did you mean `rabbitmq`?",
        "tenants[0].token: environment variable SLUICE_TEST_UNSET_TOKEN is not set",
        "deployments.gpt-4o-mini.provider: unknown provider \"opanai\"; did you mean `openai`?",
        "routes.fast[0]: unknown deployment \"gpt-4o-mni\"; did you mean `gpt-4o-mini`?",
    ] {
        assert!(
            problems.contains(&expected.to_string()),
            "{expected} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

/// A value that is missing leaves its section out: its problem is listed, and the cross
/// references are not checked (they would name the section's absence).
#[test]
fn a_missing_value_is_listed_without_follow_on_problems() {
    let text = r#"
        [pools.batch]
        concurency = 8

        [providers.openai]
        kind = "openai"
        base_url = "sim"
        keys = [{ id = "k", secret = "s" }]

        [deployments.mini]
        provider = "openai"

        [routes.fast]
        deployments = ["mini"]
    "#;
    let mut problems = problems_of(text);
    problems.sort();
    assert_eq!(
        problems,
        [
            "deployments.mini: missing field `model`",
            "pools.batch.concurency: unknown key `concurency`; did you mean `concurrency`?",
        ],
    );
}

/// No part of a secret is named in a problem: a variable's value holding `${x}` is taken
/// as it is, and a line that is not TOML is located, not quoted.
#[test]
fn secrets_never_appear_in_problems() {
    let env = |name: &str| (name == "TOKEN").then(|| "sk-SECRET${frag}".to_string());
    let text = "[[tenants]]\nname = \"acme\"\ntoken = \"${TOKEN}\"\n";
    let config = Config::from_toml(text, "t.toml", &env).unwrap();
    assert_eq!(config.tenants[0].token.expose(), "sk-SECRET${frag}");

    let text = "[[tenants]]\nname = \"acme\"\ntoken = \"sk-SECRET-123\n";
    let err = Config::from_toml(text, "t.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.toml:3:"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");

    let text = "[[tenants]]\nname = \"acme\"\ntoken = \"sk-SECRET${frag\"\n";
    let err = Config::from_toml(text, "t.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tenants[0].token: has \"${\""), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("frag"), "{err}");
}

#[test]
fn listen_takes_a_host_name() {
    let mut config = Config::builtin();
    config.server.listen = "localhost:8080".into();
    assert_eq!(config.validate(), vec![]);
    config.server.listen = "localhost".into();
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0]
        .to_string()
        .starts_with("server.listen: \"localhost\" is not an address"));
}

#[test]
fn urls_are_shown_without_their_passwords() {
    use crate::config::redact_url;
    assert_eq!(
        redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
        "amqp://guest:***@127.0.0.1:5672/%2f"
    );
    assert_eq!(
        redact_url("amqps://u:p%40ss@host/vh?heartbeat=10"),
        "amqps://u:***@host/vh?heartbeat=10"
    );
    // An unescaped '@' in the password: everything up to the last '@' is user info.
    assert_eq!(redact_url("amqp://u:a@b@host"), "amqp://u:***@host");
    assert_eq!(redact_url("amqp://user@host/"), "amqp://user@host/");
    assert_eq!(
        redact_url("postgres://u@host/db?password=hunter2&sslmode=require"),
        "postgres://u@host/db?password=***&sslmode=require"
    );
    assert_eq!(
        redact_url("amqp://127.0.0.1:5672/%2f"),
        "amqp://127.0.0.1:5672/%2f"
    );
    // An '@' after the authority is not a credential.
    assert_eq!(redact_url("amqp://host/v@h"), "amqp://host/v@h");
    // Text that is not a URL may hold a password anywhere: none of it is shown.
    assert_eq!(redact_url("u:hunter2 not a url"), "(not a URL)");
    assert_eq!(redact_url(""), "(not a URL)");
}

#[test]
fn a_store_without_connections_is_refused() {
    let mut config = Config::builtin();
    assert_eq!(config.server.database_connections, 16);
    config.server.database_connections = 0;
    let problems = config.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0]
        .to_string()
        .starts_with("server.database_connections: must be at least 1"));
}

#[test]
fn relative_paths_are_taken_from_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        "[server]\ndatabase = \"data/s.db\"\n[scheduler]\ndir = \"/abs/jobs\"\n",
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.server.database.sqlite_path(),
        Some(dir.path().join("data/s.db").as_path())
    );
    assert_eq!(config.scheduler.dir, PathBuf::from("/abs/jobs"));
}

#[test]
fn syntax_errors_name_the_file() {
    let err = Config::parse("[server\n", "my.toml", &|_| None).unwrap_err();
    assert!(err.to_string().starts_with("my.toml:"), "{err}");
}

#[test]
fn models_resolve_through_routes_then_deployments() {
    let config = Config::builtin();
    let route: Vec<&str> = config.resolve_model("fast").unwrap();
    assert!(!route.is_empty());
    let direct = config.resolve_model(route[0]).unwrap();
    assert_eq!(direct, vec![route[0]]);
    assert!(config.resolve_model("no-such-model").is_none());
}

#[test]
fn every_provider_kind_is_accepted() {
    let config = parse(
        r#"
        [providers.claude]
        kind = "anthropic"
        base_url = "https://api.anthropic.com"
        keys = [{ id = "a-1", secret = "sk-ant" }]

        [providers.google]
        kind = "gemini"
        base_url = "https://generativelanguage.googleapis.com/v1beta"
        keys = [{ id = "g-1", secret = "AIza" }]

        [deployments.sonnet]
        provider = "claude"
        model = "claude-sonnet-4-5"
        price = { input = 3, output = 15, cached_input = 0.30, cache_write = 3.75 }
        default_max_tokens = 8192

        [deployments.flash]
        provider = "google"
        model = "gemini-2.5-flash"
        price = { input = 0.30, output = 2.50 }
        drop_unsupported_params = true
        "#,
    );
    assert_eq!(config.validate(), vec![]);
    assert_eq!(config.deployments["sonnet"].default_max_tokens, Some(8192));
    assert!(config.deployments["flash"].drop_unsupported_params);
    assert_eq!(
        config
            .deployment_price("sonnet")
            .price()
            .unwrap()
            .cache_write,
        Some(crate::pricing::MicrosPerMillion(3_750_000))
    );
}

#[test]
fn prices_come_from_the_deployment_then_the_catalogue_else_are_a_named_problem() {
    let config = parse(
        r#"
        [providers.oa]
        kind = "openai"
        base_url = "https://api.openai.com/v1"
        keys = [{ id = "k", secret = "s" }]

        [deployments.mini]
        provider = "oa"
        model = "gpt-4o-mini"

        [deployments.mine]
        provider = "oa"
        model = "gpt-4o-mini"
        price = { input = "0.10", output = 0.5 }

        [deployments.newer]
        provider = "oa"
        model = "gpt-4.1"

        [deployments.local]
        provider = "oa"
        model = "llama-3-70b"
        price = "unknown"
        "#,
    );
    assert!(matches!(
        config.deployment_price("mini"),
        PriceSource::Catalogue(e) if e.input.0 == 150_000
    ));
    assert_eq!(
        config.deployment_price("mine").price().unwrap().input.0,
        100_000
    );
    assert!(matches!(
        config.deployment_price("local"),
        PriceSource::DeclaredUnknown
    ));
    let problems = listed(&config);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "deployments.newer.price: no price: the catalogue has none for openai model \"gpt-4.1\""
        ) && problems[0].contains("price = \"unknown\""),
        "{problems:?}"
    );
    let err = Config::parse(
        "[deployments.x]\nprovider = \"oa\"\nmodel = \"m\"\nprice = \"free\"\n",
        "t.toml",
        &|_| None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"free\" is not a price"), "{err}");
}

/// A configuration that does not validate cannot be resolved, so it cannot be started: the
/// error lists its problems as `check-config` does.
#[test]
fn an_invalid_configuration_does_not_resolve() {
    let mut config = Config::builtin();
    config
        .routes
        .get_mut("fast")
        .unwrap()
        .deployments
        .push("gpt-5".into());
    config.queue.backend = Some(QueueBackend::Rabbitmq);
    let Err(ConfigError::Invalid { problems, .. }) = config.resolve() else {
        panic!("an unknown deployment and a broker without a url resolved");
    };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("routes.fast[") && p.contains("unknown deployment \"gpt-5\"")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("queue.url:")),
        "{problems:?}"
    );
}

#[test]
fn a_resolved_configuration_holds_its_references() {
    let config = parse(
        r#"
        [[tenants]]
        name = "acme"
        token = "tok-acme"

        [[tenants]]
        name = "globex"
        token = "tok-globex"

        [providers.oa]
        kind = "openai"
        base_url = "sim"
        keys = [{ id = "k1", secret = "sk-1" }, { id = "k2", secret = "sk-2" }]

        [deployments.mini]
        provider = "oa"
        model = "gpt-4o-mini"
        batch = {}
        flex = {}

        [deployments.local]
        provider = "oa"
        model = "llama"
        price = "unknown"

        [routes.fast]
        deployments = ["local", "mini"]
        "#,
    )
    .resolve()
    .unwrap();
    let mini = &config.resolved_deployments()["mini"];
    assert_eq!(mini.provider.kind, ProviderKind::Openai);
    assert_eq!(mini.provider.keys[1].secret.expose(), "sk-2");
    assert_eq!(mini.price.map(|p| p.input.0), Some(150_000));
    let batch = mini.batch.unwrap();
    assert_eq!(batch.price.map(|p| p.input.0), Some(75_000));
    assert_eq!(batch.max_requests, 50_000);
    assert_eq!(mini.flex.and_then(|f| f.price), batch.price);
    assert_eq!(config.resolved_deployments()["local"].price, None);

    let fast = &config.resolved_routes()["fast"];
    let chain: Vec<&str> = fast.chain.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(chain, ["local", "mini"]);
    assert_eq!(fast.weights, [1, 1]);
    assert!(std::sync::Arc::ptr_eq(&fast.chain[1], mini));
    assert!(matches!(config.queue_backend(), ResolvedQueue::Embedded));

    assert_eq!(
        config
            .tenant_for_token("tok-globex")
            .map(|t| t.name.as_str()),
        Some("globex")
    );
    assert!(config.tenant_for_token("tok-").is_none());
    assert!(!format!("{config:?}").contains("tok-acme"));
}

#[test]
fn uploaded_files_live_beside_the_sqlite_file_or_in_the_postgres_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, "[server]\ndatabase = \"data/s.db\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.server.file_bytes(),
        FileBytes::Folder(dir.path().join("data/s.files"))
    );

    let text = "[server]\ndatabase = \"postgres://db.internal/sluice\"\n\
                [queue]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.file_bytes(), FileBytes::Store);

    let text = "[server]\ndatabase = \"postgres://db.internal/sluice\"\nfiles = \"shared/files\"\n\
                [queue]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.server.file_bytes(),
        FileBytes::Folder(dir.path().join("shared/files"))
    );
}

#[test]
fn the_database_url_takes_its_password_from_the_environment_and_never_shows_it() {
    let text = "[server]\ndatabase = \"postgres://sluice:${PG_PASSWORD}@db.internal/sluice\"\n\
                [queue]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n";
    let env = |name: &str| (name == "PG_PASSWORD").then(|| "s3cr3t-pw".to_string());
    let config = Config::from_toml(text, "t.toml", &env).unwrap();
    let crate::config::Database::Postgres(url) = &config.server.database else {
        panic!("a postgres URL");
    };
    assert_eq!(
        url.expose(),
        "postgres://sluice:s3cr3t-pw@db.internal/sluice"
    );
    assert!(!format!("{url} {url:?} {:?}", config.server).contains("s3cr3t"));

    let problems = Config::from_toml(text, "t.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        problems.contains("server.database: environment variable PG_PASSWORD is not set"),
        "{problems}"
    );
}

#[test]
fn a_database_given_whole_by_the_environment_is_read_once_expanded() {
    let text = "[server]\ndatabase = \"${DATABASE_URL}\"\n\
                [queue]\nurl = \"amqp://127.0.0.1:5672/%2f\"\n";
    let env =
        |value: &'static str| move |name: &str| (name == "DATABASE_URL").then(|| value.to_string());
    let config = Config::from_toml(text, "t.toml", &env("postgres://u:pw-9@db/sluice")).unwrap();
    let crate::config::Database::Postgres(url) = &config.server.database else {
        panic!("a postgres URL: {:?}", config.server.database);
    };
    assert_eq!(url.expose(), "postgres://u:pw-9@db/sluice");
    assert!(!format!("{:?}", config.server).contains("pw-9"));

    let config = Config::from_toml(text, "t.toml", &env("data/sluice.db")).unwrap();
    assert_eq!(
        config.server.database,
        crate::config::Database::Sqlite("data/sluice.db".into())
    );

    let problems = Config::from_toml(text, "t.toml", &env("mysql://db/x"))
        .unwrap_err()
        .to_string();
    assert!(problems.contains("server.database"), "{problems}");
    assert!(
        !problems.contains("mysql://db/x") || problems.contains("mysql"),
        "{problems}"
    );
}

#[test]
fn an_operator_token_is_its_own_and_found_by_its_digest() {
    let mut config = Config::builtin();
    let demo = config.tenants[0].token.clone();
    config.operators.push(super::OperatorConfig {
        name: "night".into(),
        token: demo,
    });
    config.operators.push(super::OperatorConfig {
        name: String::new(),
        token: Secret::new("sk-sluice-operator"),
    });
    let problems = listed(&config);
    for expected in [
        "operators[1].token: same token as tenants[0]; an operator's token must be its own",
        "operators[2].name: must not be empty",
        "operators[2].token: same token as operators[0]; every operator needs its own",
    ] {
        assert!(problems.iter().any(|p| p == expected), "{problems:?}");
    }
    let resolved = Config::builtin().resolve().unwrap();
    assert_eq!(
        resolved
            .operator_for_token("sk-sluice-operator")
            .map(|o| o.name.as_str()),
        Some("admin")
    );
    assert!(resolved.operator_for_token("sk-sluice-demo").is_none());
    assert!(resolved.tenant_for_token("sk-sluice-operator").is_none());
}
