//! How the pages write times, durations, ids and statuses, the same on every page.

use crate::job::JobStatus;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

/// A time as `2026-12-03 15:04:05` (UTC, said once in each page's header).
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A span of milliseconds as a person reads it: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 10 min`.
pub fn millis(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1_000)
    } else if ms < 2 * 86_400_000 {
        format!("{} h {:02} min", ms / 3_600_000, ms % 3_600_000 / 60_000)
    } else {
        format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000)
    }
}

/// How long ago `at` was, from `now`.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", millis((now - at).num_milliseconds()))
}

/// A job status as a coloured badge.
pub fn status(status: JobStatus) -> Markup {
    html! { span class={ "status " (status) } { (status) } }
}

/// A job's id as a link to its page, shortened to its last twelve digits (its random part,
/// which tells jobs of one millisecond apart) with the whole id in the title.
pub fn job_link(id: uuid::Uuid) -> Markup {
    let text = id.to_string();
    html! { a.mono href={ "/ui/jobs/" (text) } title=(text) { "…" (&text[text.len() - 12..]) } }
}

/// A whole number with thin spaces between thousands: `1 234 567`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(12_345), "12.3 s");
        assert_eq!(millis(245_000), "4 min 05 s");
        assert_eq!(millis(7_800_000), "2 h 10 min");
        assert_eq!(millis(-5), "0 ms");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(count(-1000), "-1\u{202f}000");
    }
}
