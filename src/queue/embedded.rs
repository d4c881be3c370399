//! Embedded backend (SQLite). Placeholder until implemented.
