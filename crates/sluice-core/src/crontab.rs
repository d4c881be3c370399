//! Cron expressions as Sluice reads them, for recurring jobs and the batch tier's poll
//! schedule alike: crontab's five fields (with crontab's weekday numbers), the `cron`
//! crate's seconds-first six or seven, or a shorthand such as `@daily`.

use std::str::FromStr;

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
    use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};

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
}
