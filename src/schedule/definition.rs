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

/// Parses a crontab expression (`min hour dom month dow`), a `cron`-crate expression with
/// seconds first (6 or 7 fields), or a shorthand such as `@daily`.
pub fn parse_schedule(expression: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let normalised = match fields.len() {
        1 if expression.trim_start().starts_with('@') => expression.trim().to_string(),
        5 => {
            // The cron crate's own range errors speak of its 6-field form ("Minutes must be
            // less than 59" for 61); crontab's fields are checked here, in crontab's terms.
            for (field, (name, low, high)) in fields[..4].iter().zip(CRONTAB_RANGES) {
                check_crontab_numbers(field, name, low, high)?;
            }
            let dow = crontab_day_of_week(fields[4])?;
            format!(
                "0 {} {} {} {} {dow}",
                fields[0], fields[1], fields[2], fields[3]
            )
        }
        6 | 7 => fields.join(" "),
        n => {
            return Err(format!(
                "has {n} fields; write 5 (crontab: minute hour day month weekday), 6 or 7 \
                 (seconds first), or a shorthand like @daily"
            ))
        }
    };
    cron::Schedule::from_str(&normalised).map_err(|e| e.to_string())
}

/// The numbers crontab allows in its first four fields.
const CRONTAB_RANGES: [(&str, u32, u32); 4] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of the month", 1, 31),
    ("month", 1, 12),
];

/// Every number of a crontab field (`5`, `1-15`, `*/20`, `0,30`) within `low..=high`; names
/// (`Jan`) and `*` are left to the cron crate.
fn check_crontab_numbers(field: &str, name: &str, low: u32, high: u32) -> Result<(), String> {
    for item in field.split(',') {
        let range = item.split_once('/').map_or(item, |(range, _)| range);
        for number in range.split('-') {
            if let Ok(n) = number.parse::<u32>() {
                if !(low..=high).contains(&n) {
                    return Err(format!("{name} {n} is not {low}-{high}"));
                }
            }
        }
    }
    Ok(())
}

/// Crontab numbers weekdays 0-7 with Sunday as 0 and 7; the `cron` crate numbers them 1-7 with
/// Sunday as 1. Names pass through; numbers are shifted so `1` still means Monday.
fn crontab_day_of_week(field: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<u32, String> {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("weekday \"{n}\" is not 0-7 or a name like Mon"))?;
        if n > 7 {
            return Err(format!("weekday {n} is not 0-7"));
        }
        Ok(n % 7 + 1)
    };
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut items = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let with_step = |text: String| match step {
            Some(step) => format!("{text}/{step}"),
            None => text,
        };
        match range.split_once('-') {
            Some((from, to)) if is_number(from) && is_number(to) => {
                let (a, b) = (shift(from)?, to.parse::<u32>().unwrap_or(u32::MAX));
                if b == 7 && step.is_none() {
                    // `5-7` is Friday to Sunday: Sunday is 1 in the cron crate, so split it.
                    if a <= 7 {
                        items.push(format!("{a}-7"));
                    }
                    items.push("1".to_string());
                } else {
                    items.push(with_step(format!("{a}-{}", shift(to)?)));
                }
            }
            _ if is_number(range) => items.push(with_step(shift(range)?.to_string())),
            _ => items.push(item.to_string()),
        }
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn crontab_weekdays_mean_what_they_mean_in_crontab() {
        // 2026-11-23 is a Monday.
        let monday_9 = parse_schedule("0 9 * * 1").unwrap();
        let next = monday_9.after(&at("2026-11-22T00:00:00Z")).next().unwrap();
        assert_eq!(next.weekday(), Weekday::Mon);
        assert_eq!(next.hour(), 9);
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * Sun"] {
            let next = parse_schedule(sunday)
                .unwrap()
                .after(&at("2026-11-23T00:00:00Z"))
                .next()
                .unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{sunday}");
        }
        let weekend = parse_schedule("0 9 * * 5-7").unwrap();
        let days: Vec<Weekday> = weekend
            .after(&at("2026-11-23T00:00:00Z"))
            .take(3)
            .map(|t| t.weekday())
            .collect();
        assert_eq!(days, [Weekday::Fri, Weekday::Sat, Weekday::Sun]);
        let weekdays = parse_schedule("30 8 * * 1-5").unwrap();
        assert!(weekdays
            .after(&at("2026-11-23T00:00:00Z"))
            .take(10)
            .all(|t| !matches!(t.weekday(), Weekday::Sat | Weekday::Sun)));
    }

    #[test]
    fn seconds_first_and_shorthands_pass_through_and_nonsense_is_named() {
        assert!(parse_schedule("*/10 * * * * *").is_ok());
        assert!(parse_schedule("@daily").is_ok());
        let error = parse_schedule("0 9 * *").unwrap_err();
        assert!(error.contains("has 4 fields"), "{error}");
        for (expression, says) in [
            ("61 * * * *", "minute 61 is not 0-59"),
            ("0 25 * * *", "hour 25 is not 0-23"),
            ("0 9 0 * *", "day of the month 0 is not 1-31"),
            ("0 9 1-32 * *", "day of the month 32 is not 1-31"),
            ("0 9 * 13 *", "month 13 is not 1-12"),
        ] {
            assert_eq!(parse_schedule(expression).unwrap_err(), says);
        }
        assert!(parse_schedule("59 23 31 12 *").is_ok());
        assert!(parse_schedule("*/15 0-23 1,15 Jan-Jun *").is_ok());
        let error = parse_schedule("0 9 * * 8").unwrap_err();
        assert!(error.contains("weekday 8"), "{error}");
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
