//! The generic cell rate algorithm (GCRA) as a pure function over a stored state, for a
//! bucket that lives in the store and is shared by every process of a cluster.
//!
//! In one process a key's buckets are governor's, in memory. A cluster needs one bucket a
//! key for all its processes, so the bucket's whole state — one number, the *theoretical
//! arrival time* (TAT) — is a row of the store, and a process takes cells from it in blocks
//! inside a transaction ([`Gcra::take`] computes the new row). governor keeps its state in
//! an atomic and offers no function over a state held elsewhere, hence this one.
//!
//! The bucket holds `burst` cells and one cell returns every `interval`. State: the TAT, the
//! time at which the bucket would be full again. At `now` the bucket has used
//! `max(TAT − now, 0)` of its `burst × interval` and has the rest, in whole cells, to give.
//! Taking `n` moves the TAT `n` intervals on from `max(TAT, now)`. So calls in any window of
//! length `w` never exceed `burst + w / interval`, the limit a provider enforces.
//!
//! Unlike governor's `check_n` a take here is *partial*: it grants what the bucket has, up to
//! what was asked, because a block of cells is a lease for several calls, not one call.

use std::time::Duration;

/// Which of a key's limits a bucket holds (a key has up to one bucket of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyLimit {
    RequestsPerMinute,
    TokensPerMinute,
    RequestsPerDay,
}

impl KeyLimit {
    pub const ALL: [KeyLimit; 3] = [
        KeyLimit::RequestsPerMinute,
        KeyLimit::TokensPerMinute,
        KeyLimit::RequestsPerDay,
    ];

    /// The limit's name, as the configuration spells it and the store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyLimit::RequestsPerMinute => "requests_per_minute",
            KeyLimit::TokensPerMinute => "tokens_per_minute",
            KeyLimit::RequestsPerDay => "requests_per_day",
        }
    }

    pub fn parse(name: &str) -> Option<KeyLimit> {
        KeyLimit::ALL
            .into_iter()
            .find(|limit| limit.as_str() == name)
    }

    /// The period the limit counts over.
    pub fn period(self) -> Duration {
        match self {
            KeyLimit::RequestsPerMinute | KeyLimit::TokensPerMinute => Duration::from_secs(60),
            KeyLimit::RequestsPerDay => Duration::from_secs(86_400),
        }
    }
}

/// One bucket's shape: `burst` cells, one back every `interval_ns` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub interval_ns: u64,
    pub burst: u64,
}

/// What a take gave: `granted` cells (possibly fewer than asked, possibly none), the bucket's
/// new TAT to store, and how long until the bucket has another cell after this take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub granted: u64,
    pub tat_ns: i64,
    pub next_cell_in: Duration,
}

impl Gcra {
    /// `limit` cells per `period`, all of them at once when the bucket is full (the burst is
    /// the limit, as providers count a minute's requests), less `holdback` cells kept back
    /// (see the capacity leases: cells may be used up to a lease after they were granted).
    /// `None` for a limit of 0.
    pub fn per(limit: u32, period: Duration, holdback: u64) -> Option<Gcra> {
        if limit == 0 {
            return None;
        }
        let interval_ns = (period.as_nanos() / u128::from(limit)).max(1);
        let interval_ns = u64::try_from(interval_ns).unwrap_or(u64::MAX);
        let burst = u64::from(limit).saturating_sub(holdback).max(1);
        Some(Gcra { interval_ns, burst })
    }

    /// The bucket's whole capacity in nanoseconds of refill.
    fn span_ns(&self) -> i128 {
        i128::from(self.burst) * i128::from(self.interval_ns)
    }

    /// Cells the bucket holds at `now_ns` with theoretical arrival time `tat_ns`.
    pub fn available(&self, tat_ns: i64, now_ns: i64) -> u64 {
        let used = (i128::from(tat_ns) - i128::from(now_ns)).max(0);
        let free = (self.span_ns() - used).max(0);
        (free / i128::from(self.interval_ns)) as u64
    }

    /// Takes up to `want` cells at `now_ns` from a bucket whose TAT is `tat_ns` (a new
    /// bucket's TAT is 0: full).
    pub fn take(&self, tat_ns: i64, now_ns: i64, want: u64) -> Take {
        let granted = want.min(self.available(tat_ns, now_ns));
        let base = i128::from(tat_ns.max(now_ns));
        let tat = base + i128::from(granted) * i128::from(self.interval_ns);
        let tat_ns = i64::try_from(tat).unwrap_or(i64::MAX);
        // Another cell is there once the used span is back to `burst - 1` cells.
        let used = (tat - i128::from(now_ns)).max(0);
        let wait = (used + i128::from(self.interval_ns) - self.span_ns()).max(0);
        Take {
            granted,
            tat_ns,
            next_cell_in: Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    /// 60 a minute: a cell a second, 60 at once.
    fn per_minute(n: u32) -> Gcra {
        Gcra::per(n, Duration::from_secs(60), 0).unwrap()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_a_cell_per_interval() {
        let g = per_minute(60);
        let t = g.take(0, 100 * SECOND, 100);
        assert_eq!(t.granted, 60);
        assert_eq!(t.next_cell_in, Duration::from_secs(1));
        let t2 = g.take(t.tat_ns, 100 * SECOND + SECOND / 2, 5);
        assert_eq!(t2.granted, 0);
        assert_eq!(t2.next_cell_in, Duration::from_millis(500));
        let t3 = g.take(t2.tat_ns, 101 * SECOND, 5);
        assert_eq!(t3.granted, 1);
        assert_eq!(t3.next_cell_in, Duration::from_secs(1));
    }

    #[test]
    fn takes_are_partial_and_never_exceed_the_limit_over_any_window() {
        // Many small takes at odd times: over every 30 s window, at most 60 + 30 cells.
        let g = per_minute(60);
        let mut tat = 0;
        let mut granted_at = Vec::new();
        let mut now = 0i64;
        while now < 300 * SECOND {
            let t = g.take(tat, now, 7);
            tat = t.tat_ns;
            granted_at.extend(std::iter::repeat_n(now, t.granted as usize));
            now += 137_000_000;
        }
        for (i, start) in granted_at.iter().enumerate() {
            let in_window = granted_at[i..]
                .iter()
                .take_while(|at| **at < start + 30 * SECOND)
                .count();
            assert!(in_window <= 90, "{in_window} cells in 30 s from {start}");
        }
        // And the bucket is really used: about a cell a second after the first burst.
        assert!(granted_at.len() >= 60 + 290, "{}", granted_at.len());
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_and_no_further() {
        let g = per_minute(60);
        let t = g.take(0, 0, 60);
        assert_eq!(g.available(t.tat_ns, 30 * SECOND), 30);
        assert_eq!(g.available(t.tat_ns, 600 * SECOND), 60);
    }

    #[test]
    fn the_holdback_lowers_the_burst_not_the_rate() {
        let g = Gcra::per(60, Duration::from_secs(60), 1).unwrap();
        assert_eq!(g.burst, 59);
        assert_eq!(g.interval_ns, SECOND as u64);
        assert_eq!(Gcra::per(1, Duration::from_secs(60), 5).unwrap().burst, 1);
        assert_eq!(Gcra::per(0, Duration::from_secs(60), 0), None);
    }
}
