//! Recurring job definitions: one `jobs/NAME.toml` file each, parsed and checked.
//!
//! ```toml
//! schedule = "0 6 * * Mon-Fri"   # crontab (5 fields), or with seconds first (6-7 fields), or @daily
//! timezone = "Europe/Berlin"     # IANA name; default UTC
//! tenant = "acme"
//! urgency = "batch"              # default standard
//! catch_up = "latest"            # after downtime: skip | latest | all (default latest)
//! deadline = "6h"                # optional, counted from each due time
//! tags = { team = "growth", feature = "digest" }
//!
//! [request]                      # one chat request per run …
//! model = "fast"
//! messages = [{ role = "user", content = "Summarise yesterday's tickets." }]
//! ```
//!
//! … or `file = "digest.jsonl"` (a JSONL bulk, relative to the definition) instead of
//! `[request]`. The name is the file's stem.
//!
//! Loading never stops at the first bad file: every problem is reported with its file, and
//! every good definition still runs.

use crate::config::Config;
use crate::crontab::parse_schedule;
use crate::job::{ChatRequest, Tags, Urgency};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// What to do about due times that passed while Sluice was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Forget them; wait for the next due time.
    Skip,
    /// Run once, for the most recent one.
    Latest,
    /// Run each of them (at most [`MAX_CATCH_UP`]), oldest first.
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// The most missed runs `catch_up = "all"` fires, so a definition that was off for a year
/// does not flood the queue.
pub const MAX_CATCH_UP: usize = 100;

/// What one run submits.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Request(ChatRequest),
    /// A JSONL file of requests, submitted as one bulk.
    File(PathBuf),
}

/// A checked definition, ready to schedule.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub file: PathBuf,
    /// The expression as written, for display.
    pub expression: String,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub tenant: String,
    pub urgency: Urgency,
    pub tags: Tags,
    pub catch_up: CatchUp,
    pub deadline: Option<Duration>,
    pub work: Work,
}

impl Definition {
    /// The due times strictly after `after`, in order, in UTC.
    fn due_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.schedule
            .after_owned(after.with_timezone(&self.timezone))
            .map(|due| due.with_timezone(&Utc))
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due_after(after).next()
    }

    /// The first `n` due times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.due_after(after).take(n).collect()
    }

    /// The due times in `(after, until]`, oldest first, at most `limit` (the newest ones when
    /// there are more).
    pub fn due_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        if limit == 0 {
            return Vec::new();
        }
        let mut due = std::collections::VecDeque::with_capacity(limit);
        for next in self.due_after(after).take_while(|t| *t <= until) {
            if due.len() == limit {
                due.pop_front();
            }
            due.push_back(next);
        }
        due.into()
    }
}

/// A definition file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct DefinitionError {
    pub file: PathBuf,
    pub message: String,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    schedule: String,
    #[serde(default)]
    timezone: Option<String>,
    tenant: String,
    #[serde(default)]
    urgency: Option<Urgency>,
    #[serde(default)]
    catch_up: Option<CatchUp>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    request: Option<ChatRequest>,
    #[serde(default)]
    file: Option<PathBuf>,
}

/// Every `*.toml` in `dir` (sorted by name): the good definitions, and a problem for each bad
/// file. A missing directory is no definitions, not an error.
pub fn load_dir(dir: &Path, config: &Config) -> (Vec<Definition>, Vec<DefinitionError>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return (
                Vec::new(),
                vec![DefinitionError {
                    file: dir.to_path_buf(),
                    message: format!("cannot read the folder: {e}"),
                }],
            )
        }
    };
    files.sort();
    let mut definitions = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(&file, config) {
            Ok(definition) => definitions.push(definition),
            Err(message) => errors.push(DefinitionError { file, message }),
        }
    }
    (definitions, errors)
}

fn load_file(file: &Path, config: &Config) -> Result<Definition, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let raw: RawDefinition = toml::from_str(&text).map_err(|e| e.message().to_string())?;
    let name = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let schedule =
        parse_schedule(&raw.schedule).map_err(|e| format!("schedule \"{}\": {e}", raw.schedule))?;
    let timezone = match &raw.timezone {
        None => chrono_tz::UTC,
        Some(tz) => chrono_tz::Tz::from_str(tz).map_err(|_| {
            format!("timezone \"{tz}\" is not an IANA time zone name (e.g. \"Europe/Berlin\")")
        })?,
    };
    if config.tenant(&raw.tenant).is_none() {
        return Err(format!(
            "tenant \"{}\" is not in the configuration",
            raw.tenant
        ));
    }
    let deadline = raw
        .deadline
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| format!("deadline \"{text}\": {e} (write e.g. \"6h\")"))
        })
        .transpose()?;
    let work = match (raw.request, raw.file) {
        (Some(request), None) => {
            request
                .validate()
                .map_err(|e| e.within("request").to_string())?;
            if config.resolve_model(&request.model).is_none() {
                return Err(format!(
                    "request.model: {}",
                    config.unknown_model(&request.model)
                ));
            }
            Work::Request(request)
        }
        (None, Some(path)) => {
            let path = file.parent().unwrap_or(Path::new(".")).join(path);
            if !path.is_file() {
                return Err(format!("file {} does not exist", path.display()));
            }
            Work::File(path)
        }
        (Some(_), Some(_)) => return Err("has both [request] and file; keep one".into()),
        (None, None) => {
            return Err("says nothing to run: add a [request] table or file = \"….jsonl\"".into())
        }
    };
    Ok(Definition {
        name,
        file: file.to_path_buf(),
        expression: raw.schedule,
        schedule,
        timezone,
        tenant: raw.tenant,
        urgency: raw.urgency.unwrap_or(Urgency::Standard),
        tags: raw.tags,
        catch_up: raw.catch_up.unwrap_or(CatchUp::Latest),
        deadline,
        work,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn due_times_follow_the_time_zone_and_missed_runs_are_bounded() {
        let mut config = Config::builtin();
        config.tenants[0].name = "acme".into();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("digest.toml"),
            r#"
schedule = "0 6 * * *"
timezone = "Europe/Berlin"
tenant = "acme"
[request]
model = "fast"
messages = [{ role = "user", content = "hi" }]
"#,
        )
        .unwrap();
        let (definitions, errors) = load_dir(dir.path(), &config);
        assert!(errors.is_empty(), "{errors:?}");
        let digest = &definitions[0];
        assert_eq!(digest.name, "digest");
        // 06:00 in Berlin is 05:00 UTC in winter.
        let next = digest.next_after(at("2026-11-24T12:00:00Z")).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap());
        let missed = digest.due_between(at("2026-11-01T00:00:00Z"), at("2026-11-24T12:00:00Z"), 5);
        assert_eq!(missed.len(), 5, "only the newest 5");
        assert_eq!(*missed.last().unwrap(), at("2026-11-24T05:00:00Z"));
        assert!(missed.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn every_bad_file_is_named_and_the_good_ones_still_load() {
        let mut config = Config::builtin();
        config.tenants[0].name = "acme".into();
        let dir = tempfile::tempdir().unwrap();
        let request =
            "[request]\nmodel = \"fast\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n";
        let files = [
            ("good.toml", format!("schedule = \"@hourly\"\ntenant = \"acme\"\n{request}")),
            ("cron.toml", format!("schedule = \"61 * * * *\"\ntenant = \"acme\"\n{request}")),
            ("tz.toml", format!("schedule = \"@daily\"\ntimezone = \"Mars/Base\"\ntenant = \"acme\"\n{request}")),
            ("file.toml", "schedule = \"@daily\"\ntenant = \"acme\"\nfile = \"missing.jsonl\"\n".to_string()),
            ("model.toml", "schedule = \"@daily\"\ntenant = \"acme\"\n[request]\nmodel = \"gpt-9\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n".to_string()),
            ("tenant.toml", format!("schedule = \"@daily\"\ntenant = \"nobody\"\n{request}")),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let (definitions, errors) = load_dir(dir.path(), &config);
        assert_eq!(definitions.len(), 1);
        assert_eq!(definitions[0].name, "good");
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 5, "{messages:#?}");
        let find = |file: &str| messages.iter().find(|m| m.contains(file)).unwrap().clone();
        assert!(find("cron.toml").contains("schedule \"61 * * * *\""));
        assert!(find("tz.toml").contains("Mars/Base"));
        assert!(find("file.toml").contains("missing.jsonl does not exist"));
        assert!(find("model.toml").contains("gpt-9"));
        assert!(find("tenant.toml").contains("tenant \"nobody\""));
    }
}
