//! Every wait a provider writes, read one way: `retry-after` (seconds or an HTTP date),
//! `retry-after-ms`, Gemini's `retryDelay`, OpenAI's Go-duration reset headers and
//! Anthropic's RFC 3339 reset times, and what a set of rate limits says about the key.
//!
//! A provider's hint is text it wrote (`retry-after: 1e20` is a valid number, and
//! `Duration::from_secs_f64` panics on it), and Sluice adds every wait to clocks and timers. So
//! there is one parser, [`parse_wait`], with one bound, [`MAX_PROVIDER_WAIT`], under every form:
//! nonsense is no hint at all, and no hint can be a wait Sluice cannot add to a clock.

use super::http::header;
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// The longest wait Sluice takes from a provider: a day. A provider's hint is a number it
/// wrote (`retry-after: 1e20` is valid text), and a wait is added to clocks and timers: a
/// bound keeps every such sum meaningful, and a day outlasts any rate-limit window.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How a provider writes a wait as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUnit {
    /// `retry-after: 1.5`: decimal seconds (the SDKs accept fractions).
    Seconds,
    /// `retry-after-ms: 250`: decimal milliseconds.
    Milliseconds,
    /// Gemini's `retryDelay: "26s"`: a protobuf JSON `Duration`, decimal seconds and an `s`.
    ProtoDuration,
    /// OpenAI's `x-ratelimit-reset-*: 6m0s`: a Go `time.Duration` (`1h2m3.5s`, `12ms`, `0`),
    /// units `h m s ms us µs ns`.
    GoDuration,
}

/// Reads a wait a provider wrote as a number, the one way every adapter reads one: `None`
/// for anything but a number that is not negative (text, `NaN`, `-1`), and at most
/// [`MAX_PROVIDER_WAIT`] however large (`1e20`, `inf`).
pub fn parse_wait(text: &str, unit: WaitUnit) -> Option<Duration> {
    let text = text.trim();
    let (number, seconds_per_unit) = match unit {
        WaitUnit::Seconds => (text, 1.0),
        WaitUnit::Milliseconds => (text, 1e-3),
        WaitUnit::ProtoDuration => (text.strip_suffix('s')?, 1.0),
        WaitUnit::GoDuration => return wait_of_seconds(go_seconds(text)?),
    };
    wait_of_seconds(number.parse::<f64>().ok()? * seconds_per_unit)
}

/// The seconds a Go `time.Duration` string says, unbounded (see [`WaitUnit::GoDuration`]).
fn go_seconds(text: &str) -> Option<f64> {
    if text == "0" {
        return Some(0.0);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_end];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// `seconds` as a wait: `None` when negative or `NaN`, at most [`MAX_PROVIDER_WAIT`], rounded
/// to whole nanoseconds (so `1.5` is exactly 1.5 s). The arithmetic under every form
/// [`parse_wait`] reads.
fn wait_of_seconds(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    let bounded = seconds.min(MAX_PROVIDER_WAIT.as_secs_f64());
    Some(Duration::from_nanos((bounded * 1e9).round() as u64))
}

/// When to come back, as the standard headers say: `retry-after-ms`, then `retry-after`
/// (seconds, fractions allowed, or an HTTP date). The official OpenAI and Anthropic SDKs read
/// both, in this order.
pub fn retry_after_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    header(headers, "retry-after-ms")
        .and_then(|ms| parse_wait(ms, WaitUnit::Milliseconds))
        .or_else(|| header(headers, "retry-after").and_then(|value| parse_retry_after(value, now)))
}

/// `retry-after`: delay seconds (the SDKs accept fractions) or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if value.trim().parse::<f64>().is_ok() {
        return parse_wait(value, WaitUnit::Seconds);
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(until(
        SystemTime::from(date.with_timezone(&chrono::Utc)),
        now,
    ))
}

/// How long from `now` until an RFC 3339 time (Anthropic's `anthropic-ratelimit-*-reset`),
/// bounded as [`until`] is; `None` for text that is not one.
pub fn until_rfc3339(text: &str, now: SystemTime) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    Some(until(SystemTime::from(at.with_timezone(&chrono::Utc)), now))
}

/// How long from `now` to `at`, at most [`MAX_PROVIDER_WAIT`]; a time in the past means
/// "now".
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_PROVIDER_WAIT)
}

/// One rate limit's state from a provider's headers: whether it is used up, and when it
/// resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub exhausted: bool,
    pub reset: Option<Duration>,
}

/// The wait a 429 implies from per-limit reset headers. The limits whose `remaining` is 0 name
/// what ran out (the latest of their resets, since all must recover); when none says so, the
/// soonest reset, because a token bucket's reset counts until it is *full* (often minutes)
/// while one request needs far less.
pub fn wait_from_limits(limits: &[LimitState]) -> Option<Duration> {
    exhausted_for(limits).or_else(|| limits.iter().filter_map(|l| l.reset).min())
}

/// How long until every used-up limit has reset (the latest of their resets), when any is
/// used up: the key can take nothing before then.
pub fn exhausted_for(limits: &[LimitState]) -> Option<Duration> {
    limits
        .iter()
        .filter(|l| l.exhausted)
        .filter_map(|l| l.reset)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::headers;

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds_then_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "3")]);
        assert_eq!(
            retry_after_headers(&h, now),
            Some(Duration::from_millis(250))
        );
        let h = headers(&[("retry-after", "3")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::from_secs(3)));
        let h = headers(&[("retry-after", "0.5")]);
        assert_eq!(
            retry_after_headers(&h, now),
            Some(Duration::from_millis(500))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:30 GMT")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::from_secs(10)));
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:00:00 GMT")]);
        assert_eq!(retry_after_headers(&h, now), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "soon")]);
        assert_eq!(retry_after_headers(&h, now), None);
    }

    /// Whatever number a provider sends, the wait is a duration Sluice can add to a clock:
    /// never a panic, never past [`MAX_PROVIDER_WAIT`]; nonsense is no hint at all.
    #[test]
    fn a_provider_wait_is_bounded_whatever_it_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, value, expected) in [
            ("retry-after", "1e20", Some(MAX_PROVIDER_WAIT)),
            (
                "retry-after",
                "1.8446744073709552e19",
                Some(MAX_PROVIDER_WAIT),
            ),
            ("retry-after", "1e400", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "inf", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "86401", Some(MAX_PROVIDER_WAIT)),
            ("retry-after", "1.25", Some(Duration::from_millis(1250))),
            ("retry-after", "-1", None),
            ("retry-after", "-inf", None),
            ("retry-after", "NaN", None),
            (
                "retry-after",
                "Fri, 31 Dec 9999 23:59:59 GMT",
                Some(MAX_PROVIDER_WAIT),
            ),
            ("retry-after-ms", "1e23", Some(MAX_PROVIDER_WAIT)),
            ("retry-after-ms", "1e300", Some(MAX_PROVIDER_WAIT)),
            ("retry-after-ms", "0.5", Some(Duration::from_micros(500))),
            ("retry-after-ms", "12", Some(Duration::from_millis(12))),
            ("retry-after-ms", "-5", None),
            ("retry-after-ms", "nan", None),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(retry_after_headers(&h, now), expected, "{name}: {value}");
        }
        for (text, expected) in [
            ("26s", Some(Duration::from_secs(26))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1e20s", Some(MAX_PROVIDER_WAIT)),
            ("0.001s", Some(Duration::from_millis(1))),
            ("-3s", None),
            ("NaNs", None),
            ("30", None),
        ] {
            assert_eq!(
                parse_wait(text, WaitUnit::ProtoDuration),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn the_exhausted_limit_decides_else_the_soonest() {
        let s = Duration::from_secs;
        let l = |exhausted, reset: Option<u64>| LimitState {
            exhausted,
            reset: reset.map(s),
        };
        assert_eq!(
            wait_from_limits(&[l(false, Some(1)), l(false, Some(360))]),
            Some(s(1))
        );
        assert_eq!(
            wait_from_limits(&[l(false, Some(1)), l(true, Some(360))]),
            Some(s(360))
        );
        assert_eq!(
            wait_from_limits(&[l(true, Some(5)), l(true, Some(9))]),
            Some(s(9))
        );
        assert_eq!(
            wait_from_limits(&[l(true, None), l(false, Some(4))]),
            Some(s(4))
        );
        assert_eq!(wait_from_limits(&[]), None);
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        let go = |text: &str| parse_wait(text, WaitUnit::GoDuration);
        assert_eq!(go("6m0s"), Some(ms(360_000)));
        assert_eq!(go("1s"), Some(ms(1000)));
        assert_eq!(go("12ms"), Some(ms(12)));
        assert_eq!(go("1.5s"), Some(ms(1500)));
        assert_eq!(go("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(go("0"), Some(Duration::ZERO));
        assert_eq!(go("0s"), Some(Duration::ZERO));
        assert_eq!(go("250us"), Some(Duration::from_micros(250)));
        assert_eq!(go("250µs"), Some(Duration::from_micros(250)));
        assert_eq!(go("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(go(" 2s "), Some(ms(2000)));
        assert_eq!(go("99999999999999999999h"), Some(MAX_PROVIDER_WAIT));
        for bad in ["", "s", "1", "1x", "-1s", "1.s.", "..5s", "1m-2s", "ms"] {
            assert_eq!(go(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_are_waits_from_now_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14T22:13:20Z
        let at = |text: &str| until_rfc3339(text, now);
        assert_eq!(at("2023-11-14T22:13:50Z"), Some(Duration::from_secs(30)));
        assert_eq!(at("2023-11-14T22:00:00Z"), Some(Duration::ZERO));
        assert_eq!(at("9999-12-31T23:59:59Z"), Some(MAX_PROVIDER_WAIT));
        assert_eq!(at("soon"), None);
    }
}
