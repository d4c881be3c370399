//! Secrets (provider keys, tenant tokens, the broker's and the database's URLs): written as they are or as
//! `${ENV_VAR}` references, expanded once at load time, and never shown by `Debug` nor named
//! in a problem. Only the text written in the file is read for references: a variable's
//! value is never scanned again, so no part of a secret is ever echoed.

use super::{Config, Database, Problem};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret value (API key, token, URL with a password). `Debug` and `Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

/// `text` as a URL fit to show: a password in its user info or in a `password` query
/// parameter is replaced by `***`. Text that is not a URL is not shown at all, since where a
/// password would sit in it cannot be told.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        // `scheme:anything` without `//` parses too, as an opaque path: not a URL to show.
        Ok(url) if !url.cannot_be_a_base() => redacted(url),
        _ => "(not a URL)".to_string(),
    }
}

/// `url` with its passwords replaced by `***` (see [`redact_url`]).
pub(super) fn redacted(mut url: url::Url) -> String {
    if url.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// The problem of a secret left empty. Its references were checked when it was expanded
/// (never its value: a secret).
pub(super) fn empty_secret(secret: &Secret, path: &str) -> Option<Problem> {
    secret
        .0
        .is_empty()
        .then(|| Problem::new(path, "must not be empty"))
}

/// Expands the `${VAR}` references of every secret in `config` through `env`, returning
/// what went wrong (unset variables, a broken reference), each at its secret's path.
pub(super) fn expand_secrets(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Problem> {
    let mut found = Vec::new();
    let mut expand = |s: &mut Secret, path: String| match expand_env(&s.0, env) {
        Ok(value) => s.0 = value,
        Err(message) => found.push(Problem { path, message }),
    };
    for (i, tenant) in config.tenants.iter_mut().enumerate() {
        expand(&mut tenant.token, format!("tenants[{i}].token"));
    }
    for (i, operator) in config.operators.iter_mut().enumerate() {
        expand(&mut operator.token, format!("operators[{i}].token"));
    }
    for (name, provider) in &mut config.providers {
        for (k, key) in provider.keys.iter_mut().enumerate() {
            expand(
                &mut key.secret,
                format!("providers.{name}.keys[{k}].secret"),
            );
        }
    }
    if let Some(url) = &mut config.queue.url {
        expand(url, "queue.url".into());
    }
    match &mut config.server.database {
        Database::Postgres(url) => match url.expanded(|text| expand_env(text, env)) {
            Ok(expanded) => *url = expanded,
            Err(message) => found.push(Problem::new("server.database", message)),
        },
        // A reference to the whole value (`${DATABASE_URL}`, as platforms hand a database
        // out) reads as a path until expanded: expand it, then read what it says.
        Database::Sqlite(path) => {
            if let Some(text) = path.to_str().filter(|text| text.contains("${")) {
                let database = expand_env(text, env)
                    .and_then(|expanded| Database::try_from(expanded).map_err(|e| e.to_string()));
                match database {
                    Ok(database) => config.server.database = database,
                    Err(message) => found.push(Problem::new("server.database", message)),
                }
            }
        }
    }
    found
}

/// Replaces each `${NAME}` written in `text` by the variable's value. The values are never
/// read again, so a secret holding `${` is taken as it is. An unset variable or a `${` that
/// is not a reference is an error naming the variable at most, never the text around it.
fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(name) = after
            .find('}')
            .map(|end| &after[..end])
            .filter(|name| is_var_name(name))
        else {
            return Err(
                "has \"${\" that does not start a reference (write ${NAME} to read the environment variable NAME)"
                    .into(),
            );
        };
        match env(name) {
            Some(value) => out.push_str(&value),
            None => unset.push(name),
        }
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    match unset.as_slice() {
        [] => Ok(out),
        [name] => Err(format!("environment variable {name} is not set")),
        names => Err(format!(
            "environment variables {} are not set",
            names.join(", ")
        )),
    }
}

/// Whether `name` can be an environment variable's name: letters, digits and `_`, not
/// starting with a digit.
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
