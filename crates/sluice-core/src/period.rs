//! Budget periods: UTC calendar days and months, each identified by its start. A leaf of its
//! own, since both the `[[budgets]]` configuration and the budgets' running totals name it.
//!
//! A running total belongs to one period and is stored under the period's start, so a new
//! period needs no reset job: the first charge of a new day finds no row and starts from
//! zero, while the old row stays as the record of what that period spent.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How long a budget's allowance lasts before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A UTC calendar day, from midnight.
    Day,
    /// A UTC calendar month, from the first at midnight.
    Month,
}

impl Period {
    /// The start of the period `now` falls in.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let date = now.date_naive();
        let first = match self {
            Period::Day => date,
            Period::Month => date.with_day(1).expect("every month has a first"),
        };
        midnight(first)
    }

    /// When the period starting at `start` ends and the next one begins (its reset time).
    pub fn next_start(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let date = start.date_naive();
        let next = match self {
            Period::Day => date.succ_opt().expect("dates far from the end of time"),
            Period::Month => {
                let (year, month) = if date.month() == 12 {
                    (date.year() + 1, 1)
                } else {
                    (date.year(), date.month() + 1)
                };
                NaiveDate::from_ymd_opt(year, month, 1).expect("the first of a month exists")
            }
        };
        midnight(next)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_day_runs_from_utc_midnight_to_the_next() {
        let start = Period::Day.start(at("2026-11-24T23:59:59.999Z"));
        assert_eq!(start, at("2026-11-24T00:00:00Z"));
        assert_eq!(Period::Day.next_start(start), at("2026-11-25T00:00:00Z"));
        // An offset time is placed by its UTC instant, not its local date.
        assert_eq!(
            Period::Day.start(at("2026-11-25T01:00:00+03:00")),
            at("2026-11-24T00:00:00Z")
        );
        assert_eq!(
            Period::Day.next_start(at("2026-12-31T00:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_month_runs_from_the_first_to_the_next_first() {
        let start = Period::Month.start(at("2026-11-24T16:00:00Z"));
        assert_eq!(start, at("2026-11-01T00:00:00Z"));
        assert_eq!(Period::Month.next_start(start), at("2026-12-01T00:00:00Z"));
        let december = Period::Month.start(at("2026-12-31T23:00:00Z"));
        assert_eq!(
            Period::Month.next_start(december),
            at("2027-01-01T00:00:00Z")
        );
        // February of a leap year ends on the 29th.
        assert_eq!(
            Period::Month.start(at("2028-02-29T12:00:00Z")),
            at("2028-02-01T00:00:00Z")
        );
        assert_eq!(
            Period::Month.next_start(at("2028-02-01T00:00:00Z")),
            at("2028-03-01T00:00:00Z")
        );
    }
}
