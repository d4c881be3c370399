//! What goes wrong in a configuration: the [`ConfigError`] that carries every [`Problem`]
//! (each at a path; every one is listed, not only the first), and the "did you mean" hint
//! for a misspelt name.

use crate::problem::Problem;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// A file that is not TOML: its line, column and the parser's message, never the line's
/// text (the line may hold a secret).
pub(super) fn syntax_error(origin: &str, text: &str, error: &toml::de::Error) -> ConfigError {
    let at = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(":{line}:{column}")
    });
    ConfigError::Syntax {
        origin: format!("{origin}{}", at.unwrap_or_default()),
        message: error.message().trim_end().to_string(),
    }
}

/// The name nearest to `name` among `known`, if one is near enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// `"; did you mean `x`?"` for `name` among `known`, or nothing.
pub(super) fn suggestion<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, known)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default()
}
