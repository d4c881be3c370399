//! One thing wrong with a configuration, at a path: the one shape of a problem that every
//! section's check returns, so a section's types (and their checks) need nothing of the
//! configuration module that lists them all.

use std::fmt;

/// One thing wrong with a configuration, at a path such as `routes.smart[1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}
