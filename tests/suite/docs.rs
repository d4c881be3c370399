//! The documentation kept true by tests: every section and key of `sluice.example.toml`
//! (the built-in default, and the example users copy) is described in
//! `docs/configuration.md`, so a new setting cannot land undocumented.

use toml::Value;

const EXAMPLE: &str = include_str!("../../sluice.example.toml");
const CONFIGURATION: &str = include_str!("../../docs/configuration.md");

/// Tables whose keys are names the user chooses (a provider, a deployment, a route), or
/// parameter names passed to a provider, rather than Sluice's own settings.
const NAMED_BY_USER: &[&str] = &["providers", "deployments", "routes", "set", "max"];

/// Every setting's key in `value`, with the dotted path it was found at.
fn keys(value: &Value, path: &str, user_named: bool, out: &mut Vec<(String, String)>) {
    match value {
        Value::Table(table) => {
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if !user_named {
                    out.push((key.clone(), child_path.clone()));
                }
                let named = !user_named && NAMED_BY_USER.contains(&key.as_str());
                // Below a user-named level (`deployments.gpt-4o-mini`) the keys are settings again.
                keys(child, &child_path, named, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                keys(item, path, user_named, out);
            }
        }
        _ => {}
    }
}

/// The words inside the page's code spans (`` `price = { input, output }` `` gives `price`,
/// `input`, `output`): where a setting's name is written when it is described.
fn code_words(markdown: &str) -> std::collections::HashSet<&str> {
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| !word.is_empty())
        .collect()
}

#[test]
fn every_key_of_the_example_is_documented() {
    let example: Value = toml::from_str(EXAMPLE).expect("sluice.example.toml parses");
    let mut found = Vec::new();
    keys(&example, "", false, &mut found);
    assert!(found.len() > 30, "the walk found only {} keys", found.len());
    let documented = code_words(CONFIGURATION);
    let undocumented: Vec<String> = found
        .into_iter()
        // Top-level keys are the sections, checked by the test below.
        .filter(|(_, path)| path.contains('.'))
        .filter(|(key, _)| !documented.contains(key.as_str()))
        .map(|(key, path)| format!("{key} (at {path})"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys of sluice.example.toml that docs/configuration.md does not describe: {undocumented:?}"
    );
}

#[test]
fn every_section_of_the_example_is_documented() {
    let example: Value = toml::from_str(EXAMPLE).expect("sluice.example.toml parses");
    let Value::Table(top) = example else {
        panic!("the example is not a table")
    };
    for (section, value) in top {
        let header = match value {
            Value::Array(_) => format!("`[[{section}]]`"),
            _ if NAMED_BY_USER.contains(&section.as_str()) => format!("`[{section}.NAME]`"),
            _ => format!("`[{section}]`"),
        };
        assert!(
            CONFIGURATION.contains(&header),
            "docs/configuration.md has no {header} section"
        );
    }
}

/// Every metric Sluice records is listed, with its labels and meaning, in
/// `docs/observability.md`, and every `sluice_` name the page lists is one Sluice records.
#[test]
fn every_metric_is_documented() {
    const OBSERVABILITY: &str = include_str!("../../docs/observability.md");
    let documented = code_words(OBSERVABILITY);
    let recorded: Vec<&str> = sluice::telemetry::metrics::ALL
        .iter()
        .map(|(name, ..)| *name)
        .collect();
    let missing: Vec<&&str> = recorded
        .iter()
        .filter(|name| !documented.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics docs/observability.md does not list: {missing:?}"
    );
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|word| word.starts_with("sluice_"))
        // A histogram's series (`_bucket`, `_sum`, `_count`) are its name and a suffix.
        .filter(|word| !recorded.iter().any(|name| word.starts_with(name)))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/observability.md lists metrics Sluice does not record: {unknown:?}"
    );
}
