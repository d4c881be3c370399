//! A key whose capacity a cluster shares: this process's side of a capacity lease.
//!
//! With several processes calling one key, each pacing it to the full limit in memory would
//! send the key several times its limit. So in a cluster the key's buckets live in the store
//! (`crate::gcra`, one row a limit), and each process *leases* cells from them in blocks:
//! the cluster's lease loop (`crate::cluster::capacity`) takes, every tick or as soon as a
//! process runs dry, about what this process asked for in the last tick, and hands the cells
//! to this [`SharedKey`], which admits calls from them in memory. So:
//!
//! - no store round trip per call: a block serves every call until it is used or expires;
//! - an idle process holds nothing: it asks for what it was asked, and a block expires
//!   [`LEASE_TTL`] after it was granted, used or not;
//! - a dead process's cells are only those of its last blocks, gone within a [`LEASE_TTL`];
//!   the bucket itself refills at the key's rate as always.
//!
//! A cell may be used up to a lease after the bucket gave it, which shifts a call by at most
//! [`LEASE_TTL`]: the store's buckets hold back a lease's refill ([`holdback`]) from their
//! burst, so the calls in any window stay within the provider's limit.
//!
//! Rests (a 429's cooldown, a spent key) told here are kept until the lease loop publishes
//! them ([`SharedKey::told_rests`]); rests other processes told reach the pool through
//! [`super::KeyPool::rest_from_cluster`], never told again, so they do not echo.

use super::clock::{after, between, Clock, DefaultClock};
use super::{Busy, KeyQuota};
use crate::gcra::{Gcra, KeyLimit};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a leased block of cells may be used after the bucket granted it.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// How much of a key's rate one process leases at a time at most (beyond one call's need):
/// enough to serve calls between two ticks of the lease loop, little enough that a process
/// does not take a burst it cannot use before its block expires.
pub const LEASE_SPAN: Duration = Duration::from_millis(500);

/// How long a call is told to wait when its process has no cells yet but the bucket may
/// (the lease loop was just woken to fetch some).
pub const REFILL_WAIT: Duration = Duration::from_millis(25);

/// Cells a bucket keeps back from its burst: what refills during one [`LEASE_TTL`], so a
/// cell used a lease late still keeps every window within the limit.
pub fn holdback(limit: u32, period: Duration) -> u64 {
    let per_lease = u128::from(limit) * LEASE_TTL.as_nanos();
    per_lease.div_ceil(period.as_nanos().max(1)) as u64
}

/// The store bucket's shape for one limit of a key, or `None` when the key has no such limit.
pub fn shape(limit: KeyLimit, quota: &KeyQuota) -> Option<Gcra> {
    let n = match limit {
        KeyLimit::RequestsPerMinute => quota.requests_per_minute,
        KeyLimit::TokensPerMinute => quota.tokens_per_minute,
        KeyLimit::RequestsPerDay => quota.requests_per_day,
    }?;
    Gcra::per(n, limit.period(), holdback(n, limit.period()))
}

/// What the lease loop asks the store for one limit of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWant {
    pub limit: KeyLimit,
    pub shape: Gcra,
    pub cells: u64,
}

/// The cells this process holds of one limit, and what it was asked.
#[derive(Debug)]
struct Held<I> {
    /// Blocks granted and not used up: cells, and when they expire. Used oldest first.
    blocks: VecDeque<(u64, I)>,
    /// Cells asked since the last lease (admitted or not): this process's demand.
    asked: u64,
    /// The most one call asked since the last lease: a block is never smaller.
    largest_ask: u64,
    /// The bucket said it has no cell before then.
    dry_until: Option<I>,
}

impl<I: Copy + PartialOrd> Held<I> {
    fn new() -> Held<I> {
        Held {
            blocks: VecDeque::new(),
            asked: 0,
            largest_ask: 0,
            dry_until: None,
        }
    }

    fn expire(&mut self, now: I) {
        self.blocks.retain(|(_, expires)| *expires > now);
    }

    fn cells(&self) -> u64 {
        self.blocks.iter().map(|(cells, _)| cells).sum()
    }

    fn spend(&mut self, mut n: u64) {
        while n > 0 {
            let Some(front) = self.blocks.front_mut() else {
                return;
            };
            let used = front.0.min(n);
            front.0 -= used;
            n -= used;
            if front.0 == 0 {
                self.blocks.pop_front();
            }
        }
    }
}

#[derive(Debug)]
struct State<I> {
    /// One per limit, in [`KeyLimit::ALL`]'s order.
    held: [Held<I>; 3],
    /// Rests told in this process and not yet published: until when.
    cooldown_until: Option<I>,
    spent_until: Option<I>,
}

/// One key of one deployment whose buckets are the cluster's (see the module's doc).
#[derive(Debug)]
pub struct SharedKey<C: Clock = DefaultClock> {
    pub deployment: String,
    /// The provider, which a spent key rests on as a whole.
    pub provider: String,
    pub key_id: String,
    /// One per limit, in [`KeyLimit::ALL`]'s order.
    shapes: [Option<Gcra>; 3],
    state: Mutex<State<C::Instant>>,
    /// Wakes the lease loop when a call found no cells.
    wake: std::sync::Arc<Notify>,
}

/// A key's limits, each with what the cells needed for one call of `estimate` tokens.
fn needs(estimate: u32) -> [u64; 3] {
    [1, u64::from(estimate), 1]
}

impl<C: Clock> SharedKey<C> {
    pub fn new(
        deployment: &str,
        provider: &str,
        key_id: &str,
        quota: &KeyQuota,
        wake: std::sync::Arc<Notify>,
    ) -> SharedKey<C> {
        SharedKey {
            deployment: deployment.to_string(),
            provider: provider.to_string(),
            key_id: key_id.to_string(),
            shapes: KeyLimit::ALL.map(|limit| shape(limit, quota)),
            state: Mutex::new(State {
                held: [Held::new(), Held::new(), Held::new()],
                cooldown_until: None,
                spent_until: None,
            }),
            wake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C::Instant>> {
        // Plain counts: still meaningful after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole tokens/min burst a call may need at once, or `None` without such a limit.
    pub fn tokens_burst(&self) -> Option<u32> {
        self.shapes[1].map(|shape| u32::try_from(shape.burst).unwrap_or(u32::MAX))
    }

    /// Takes the cells of one call of `estimate` tokens from the blocks held, all or none;
    /// or says how long until there may be some and why, and wakes the lease loop: the
    /// bucket said when its next cell comes ([`Busy::Limits`]), or this process is fetching
    /// cells it may have ([`Busy::Leasing`]).
    pub fn take(&self, estimate: u32, now: C::Instant) -> Result<(), (Duration, Busy)> {
        let need = needs(estimate);
        let mut state = self.lock();
        let mut short: Option<(Duration, Busy)> = None;
        for (i, shape) in self.shapes.iter().enumerate() {
            if shape.is_none() {
                continue;
            }
            let held = &mut state.held[i];
            held.expire(now);
            held.asked += need[i];
            held.largest_ask = held.largest_ask.max(need[i]);
            if held.cells() < need[i] {
                let wait = match held.dry_until {
                    Some(until) if until > now => {
                        (between(now, until).max(REFILL_WAIT), Busy::Limits)
                    }
                    _ => (REFILL_WAIT, Busy::Leasing),
                };
                // The longest wait decides, and a dry bucket over a fetch at the same wait.
                short = Some(match short {
                    Some(other) if other.0 > wait.0 || other.1 == Busy::Limits => other,
                    _ => wait,
                });
            }
        }
        if let Some(short) = short {
            drop(state);
            self.wake.notify_one();
            return Err(short);
        }
        for (i, shape) in self.shapes.iter().enumerate() {
            if shape.is_some() {
                state.held[i].spend(need[i]);
            }
        }
        Ok(())
    }

    /// What the lease loop should ask the store for now: for each limit this process was
    /// asked for since the last lease, about twice that demand, at least one call's need, at
    /// most a [`LEASE_SPAN`] of the key's rate (or the call's need, if larger), less what it
    /// holds. Resets the demand count.
    pub fn wants(&self, now: C::Instant) -> Vec<LeaseWant> {
        let mut state = self.lock();
        let mut wants = Vec::new();
        for (i, limit) in KeyLimit::ALL.into_iter().enumerate() {
            let Some(shape) = self.shapes[i] else {
                continue;
            };
            let held = &mut state.held[i];
            held.expire(now);
            let (asked, largest) = (held.asked, held.largest_ask);
            held.asked = 0;
            held.largest_ask = 0;
            // The bucket said when it has a cell again: asking sooner only costs a round
            // trip. The calls that asked were told to come back then, and ask again: demand
            // is not carried over, or this process would take the next cell for a job that
            // meanwhile went to another process, which would find none, again and again.
            if held.dry_until.is_some_and(|until| until > now) {
                continue;
            }
            if asked == 0 {
                continue;
            }
            let span_cells = (LEASE_SPAN.as_nanos() / u128::from(shape.interval_ns)) as u64;
            let cap = span_cells.max(largest).min(shape.burst);
            let target = asked.saturating_mul(2).max(largest).min(cap);
            let cells = target.saturating_sub(held.cells());
            if cells > 0 {
                wants.push(LeaseWant {
                    limit,
                    shape,
                    cells,
                });
            }
        }
        wants
    }

    /// The store granted `cells` of `limit` at `now`, and has no other before `next_cell_in`.
    pub fn grant(&self, limit: KeyLimit, cells: u64, next_cell_in: Duration, now: C::Instant) {
        let Some(i) = KeyLimit::ALL.iter().position(|l| *l == limit) else {
            return;
        };
        let mut state = self.lock();
        let held = &mut state.held[i];
        if cells > 0 {
            held.blocks.push_back((cells, after(now, LEASE_TTL)));
        }
        held.dry_until = (!next_cell_in.is_zero()).then(|| after(now, next_cell_in));
    }

    /// Cells held of each limit (requests/min, tokens/min, requests/day) at `now`; `None`
    /// for a limit the key does not have.
    pub fn held(&self, now: C::Instant) -> [Option<u32>; 3] {
        let mut state = self.lock();
        let mut out = [None; 3];
        for (i, shape) in self.shapes.iter().enumerate() {
            if shape.is_some() {
                state.held[i].expire(now);
                out[i] = Some(u32::try_from(state.held[i].cells()).unwrap_or(u32::MAX));
            }
        }
        out
    }

    /// Notes a rest told in this process (a 429's cooldown, or a spent key) for the lease
    /// loop to publish, and wakes it.
    pub(super) fn tell(&self, spent: bool, until: C::Instant) {
        let mut state = self.lock();
        let slot = if spent {
            &mut state.spent_until
        } else {
            &mut state.cooldown_until
        };
        if slot.is_none_or(|at| at < until) {
            *slot = Some(until);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The rests told here since the last call, as what is left of each at `now`:
    /// (cooldown, spent).
    pub fn told_rests(&self, now: C::Instant) -> (Option<Duration>, Option<Duration>) {
        let mut state = self.lock();
        let left = |until: Option<C::Instant>| {
            until
                .map(|until| between(now, until))
                .filter(|left| !left.is_zero())
        };
        let told = (left(state.cooldown_until), left(state.spent_until));
        state.cooldown_until = None;
        state.spent_until = None;
        told
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::clock::FakeRelativeClock;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    fn key(rpm: u32, tpm: Option<u32>) -> (SharedKey<FakeRelativeClock>, FakeRelativeClock) {
        let quota = KeyQuota {
            requests_per_minute: Some(rpm),
            tokens_per_minute: tpm,
            requests_per_day: None,
        };
        let key = SharedKey::new("d", "p", "k", &quota, Arc::new(Notify::new()));
        (key, FakeRelativeClock::default())
    }

    #[test]
    fn the_holdback_is_one_leases_refill_rounded_up() {
        assert_eq!(holdback(60, Duration::from_secs(60)), 1);
        assert_eq!(holdback(6000, Duration::from_secs(60)), 100);
        assert_eq!(holdback(10, Duration::from_secs(86_400)), 1);
        let quota = KeyQuota {
            requests_per_minute: Some(60),
            ..KeyQuota::default()
        };
        assert_eq!(
            shape(KeyLimit::RequestsPerMinute, &quota).unwrap().burst,
            59
        );
        assert_eq!(shape(KeyLimit::TokensPerMinute, &quota), None);
    }

    #[test]
    fn without_cells_a_call_waits_and_its_demand_becomes_a_want() {
        let (k, clock) = key(6000, Some(100_000));
        assert_eq!(k.take(500, clock.now()), Err((REFILL_WAIT, Busy::Leasing)));
        assert_eq!(k.take(300, clock.now()), Err((REFILL_WAIT, Busy::Leasing)));
        let wants = k.wants(clock.now());
        // Requests: asked 2, so 4 (under the span's 50 cells); tokens: asked 800, so 1600,
        // cut to half a second of 100,000 a minute.
        assert_eq!(wants.len(), 2);
        assert_eq!(
            (wants[0].limit, wants[0].cells),
            (KeyLimit::RequestsPerMinute, 4)
        );
        assert_eq!(
            (wants[1].limit, wants[1].cells),
            (KeyLimit::TokensPerMinute, 833)
        );
        // Demand was counted once: nothing asked since, nothing wanted.
        assert!(k.wants(clock.now()).is_empty());
    }

    #[test]
    fn granted_cells_admit_calls_all_or_none_until_they_expire() {
        let (k, clock) = key(6000, Some(100_000));
        k.grant(KeyLimit::RequestsPerMinute, 3, Duration::ZERO, clock.now());
        k.grant(KeyLimit::TokensPerMinute, 1000, Duration::ZERO, clock.now());
        assert_eq!(k.take(400, clock.now()), Ok(()));
        assert_eq!(k.take(400, clock.now()), Ok(()));
        // 200 tokens left: a call of 400 takes nothing, not even its request cell.
        assert!(k.take(400, clock.now()).is_err());
        assert_eq!(k.held(clock.now()), [Some(1), Some(200), None]);
        assert_eq!(k.take(200, clock.now()), Ok(()));
        k.grant(KeyLimit::RequestsPerMinute, 5, Duration::ZERO, clock.now());
        clock.advance(LEASE_TTL);
        assert_eq!(k.held(clock.now()), [Some(0), Some(0), None], "expired");
    }

    #[test]
    fn a_dry_bucket_makes_calls_wait_for_its_next_cell() {
        let (k, clock) = key(60, None);
        k.grant(KeyLimit::RequestsPerMinute, 0, 700 * MS, clock.now());
        assert_eq!(k.take(1, clock.now()), Err((700 * MS, Busy::Limits)));
        clock.advance(700 * MS);
        assert_eq!(k.take(1, clock.now()), Err((REFILL_WAIT, Busy::Leasing)));
    }

    #[test]
    fn a_dry_bucket_is_not_asked_again_and_its_demand_is_not_carried_over() {
        let (k, clock) = key(60, None);
        k.grant(KeyLimit::RequestsPerMinute, 0, 700 * MS, clock.now());
        let _ = k.take(1, clock.now());
        assert!(k.wants(clock.now()).is_empty());
        clock.advance(700 * MS);
        assert!(
            k.wants(clock.now()).is_empty(),
            "the call asks again itself"
        );
        let _ = k.take(1, clock.now());
        assert_eq!(k.wants(clock.now())[0].cells, 1);
    }

    #[test]
    fn a_want_is_capped_by_the_span_but_never_below_one_call() {
        // 60/min: a cell a second, so half a second's span is no cell; one call's need wins.
        let (k, clock) = key(60, Some(600));
        for _ in 0..100 {
            let _ = k.take(500, clock.now());
        }
        let wants = k.wants(clock.now());
        assert_eq!(wants[0].cells, 1);
        assert_eq!(wants[1].cells, 500);
    }

    #[test]
    fn rests_told_are_handed_over_once() {
        let (k, clock) = key(60, None);
        k.tell(false, after(clock.now(), Duration::from_secs(5)));
        k.tell(false, after(clock.now(), Duration::from_secs(2)));
        k.tell(true, after(clock.now(), Duration::from_secs(60)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            k.told_rests(clock.now()),
            (Some(Duration::from_secs(4)), Some(Duration::from_secs(59)))
        );
        assert_eq!(k.told_rests(clock.now()), (None, None));
    }
}
