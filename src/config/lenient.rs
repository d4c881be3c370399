//! Reading a parsed TOML table into a [`Config`] without stopping at the first mistake.
//!
//! serde stops at the first unknown key or wrong value. To report them all in one run, each
//! mistake is recorded with its path, the offending entry is taken out of the table, and the
//! table is read again, until it reads cleanly. An unknown key taken out changes nothing; a
//! wrong value taken out leaves its default. A required value that is missing (or was taken
//! out) takes its table with it. When that table is a named entry others refer to (a
//! provider, deployment, route, tenant or budget), the configuration is marked incomplete:
//! the references to it would look wrong, so they are checked only once it can be read.

use super::{suggestion, Config, Problem};

/// At most this many mistakes are collected (each costs a read of the whole table).
const MAX_PROBLEMS: usize = 100;

/// The sections whose entries are named, and referred to by name from elsewhere.
const NAMED: [&str; 6] = [
    "providers",
    "deployments",
    "routes",
    "tenants",
    "operators",
    "budgets",
];

/// One step of a path into the table: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The configuration in `table` with every mistake found, and whether every section could be
/// read; the problems alone when the table cannot be read at all.
pub(super) fn deserialize(
    mut table: toml::Table,
) -> Result<(Config, Vec<Problem>, bool), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut complete = true;
    // Tables from which a value was taken out: a "missing field" there is that value's.
    let mut emptied: Vec<Vec<Step>> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(
            table.clone(),
        )) {
            Ok(config) => return Ok((config, problems, complete)),
            Err(error) => error,
        };
        let mut path: Vec<Step> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = error.into_inner().message().trim_end().to_string();
        let remove = if let Some((name, known)) = unknown("field", &message) {
            // The path is the table's; the unknown key is the entry to take out.
            if path.last() != Some(&Step::Key(name.to_string())) {
                path.push(Step::Key(name.to_string()));
            }
            problems.push(problem(
                &path,
                format!(
                    "unknown key `{name}`{}",
                    hint(name, &known, "the keys here are")
                ),
            ));
            path
        } else if message.starts_with("missing field") {
            if !emptied.contains(&path) {
                problems.push(problem(&path, message));
            }
            path
        } else {
            let message = match unknown("variant", &message) {
                Some((name, known)) => format!(
                    "unknown value `{name}`{}",
                    hint(name, &known, "write one of")
                ),
                None => message,
            };
            problems.push(problem(&path, message));
            path
        };
        // An element of an array cannot be taken out alone (the later ones would change
        // their index): the whole array goes.
        let mut remove = remove;
        while matches!(remove.last(), Some(Step::Index(_))) {
            remove.pop();
        }
        if remove.len() <= 2
            && matches!(remove.first(), Some(Step::Key(section)) if NAMED.contains(&section.as_str()))
        {
            complete = false;
        }
        if problems.len() >= MAX_PROBLEMS || remove.is_empty() || !take_out(&mut table, &remove) {
            return Err(problems);
        }
        emptied.push(remove[..remove.len() - 1].to_vec());
    }
}

/// A problem at `path`, written `routes.smart.deployments[1]`.
fn problem(path: &[Step], message: String) -> Problem {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    if text.is_empty() {
        text.push_str("(top level)");
    }
    Problem {
        path: text,
        message,
    }
}

/// The suggestion for `name` among `known`, else the list of `known` after `listed`.
fn hint(name: &str, known: &[&str], listed: &str) -> String {
    match suggestion(name, known.iter().copied()) {
        near if !near.is_empty() => near,
        _ if known.is_empty() => String::new(),
        _ => format!(
            "; {listed} {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The name and the expected names of serde's "unknown field `x`, expected `a` or `b`" (or
/// `variant`): serde's wording of [`serde::de::Error::unknown_field`], the only place the
/// expected names are given.
fn unknown<'m>(what: &str, message: &'m str) -> Option<(&'m str, Vec<&'m str>)> {
    let rest = message.strip_prefix(&format!("unknown {what} `"))?;
    let (name, expected) = rest.split_once('`')?;
    let known = expected.split('`').skip(1).step_by(2).collect();
    Some((name, known))
}

/// Takes the entry at `path` out of `table`; false when there is none.
fn take_out(table: &mut toml::Table, path: &[Step]) -> bool {
    let Some((Step::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let Some((first, below)) = parents.split_first() else {
        return table.remove(last).is_some();
    };
    let Step::Key(first) = first else {
        return false;
    };
    let Some(mut value) = table.get_mut(first) else {
        return false;
    };
    for step in below {
        let next = match (step, value) {
            (Step::Key(key), toml::Value::Table(t)) => t.get_mut(key),
            (Step::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => value = next,
            None => return false,
        }
    }
    match value {
        toml::Value::Table(t) => t.remove(last).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_unknown_messages_are_read() {
        assert_eq!(
            unknown(
                "field",
                "unknown field `concurency`, expected `concurrency`"
            ),
            Some(("concurency", vec!["concurrency"]))
        );
        assert_eq!(
            unknown(
                "variant",
                "unknown variant `rabitmq`, expected `embedded` or `rabbitmq`"
            ),
            Some(("rabitmq", vec!["embedded", "rabbitmq"]))
        );
        assert_eq!(
            unknown("field", "unknown field `x`, expected one of `a`, `b`, `c`"),
            Some(("x", vec!["a", "b", "c"]))
        );
        assert_eq!(unknown("field", "missing field `x`"), None);
    }
}
