//! Recurring jobs: `jobs/*.toml` definitions fired on their cron schedules by `sluice serve`.
//!
//! - [`definition`]: parsing and checking a definition file (crontab or seconds-first cron
//!   expressions, time zones, what to run, what to do about missed runs).
//! - [`scheduler`]: the loop that fires each due time exactly once across restarts, and
//!   `sluice jobs run NAME`.

pub mod definition;
pub mod scheduler;

pub use definition::{load_dir, CatchUp, Definition, DefinitionError, Work};
pub use scheduler::{FireError, Scheduler};
