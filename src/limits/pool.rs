//! The limiters of every key of one deployment, and the one question asked of them: which key
//! has room for this call?
//!
//! **Balancing.** [`KeyPool::admit`] tries the keys starting at a rotating offset and takes
//! the first that admits, so no key is refused while another has room, and keys with room
//! share the load evenly. A key cooling down after a 429 ([`KeyPool::cool_down`]) or out of
//! credit ([`KeyPool::spend`]) is skipped; when every key that could take the call is spent,
//! the deployment says so ([`Busy::Spent`]) and the router does not wait for it.

use super::bucket::{KeyBuckets, KeyQuota};
use super::clock::{after, between, Clock, DefaultClock};
use super::cooldown::Cooldown;
use super::shared::SharedKey;
use super::{Admission, Busy, Credit, OverBurst};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a key's capacity is counted: in this process's own buckets, or in the cluster's,
/// leased in blocks ([`SharedKey`]).
enum Capacity<C: Clock> {
    Own(KeyBuckets<C>),
    Shared(Arc<SharedKey<C>>),
}

impl<C: Clock + Clone> Capacity<C> {
    fn tokens_burst(&self) -> Option<u32> {
        match self {
            Capacity::Own(buckets) => buckets.tokens_burst(),
            Capacity::Shared(key) => key.tokens_burst(),
        }
    }

    /// Takes one call's cells, or says how long until they may be there and why
    /// (`Err(Some)`), or that they never will be (`Err(None)`).
    fn take(&self, estimate: u32, now: C::Instant) -> Result<(), Option<(Duration, Busy)>> {
        match self {
            Capacity::Own(buckets) => buckets
                .take(estimate, now)
                .map_err(|wait| wait.map(|wait| (wait, Busy::Limits))),
            Capacity::Shared(key) => key.take(estimate, now).map_err(Some),
        }
    }

    /// Requests/min, tokens/min and requests/day left: after the last admitted call for
    /// our own buckets, the cells held for shared ones.
    fn remaining(&self, now: C::Instant) -> [Option<u32>; 3] {
        match self {
            Capacity::Own(buckets) => buckets.remaining(),
            Capacity::Shared(key) => key.held(now),
        }
    }
}

/// One key's buckets, cooldown and credit.
struct KeyLimiter<C: Clock> {
    id: String,
    buckets: Capacity<C>,
    cooldown: Cooldown,
    credit: Arc<Credit<C>>,
}

/// What `GET /v1/providers` shows of one key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCapacity {
    pub id: String,
    /// Remaining burst right after the last admitted call; `null` when the key has no such
    /// limit.
    pub requests_remaining: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub tokens_remaining: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub requests_today_remaining: Option<u32>,
    pub requests_per_day: Option<u32>,
    /// Milliseconds left of a 429 cooldown, when there is one.
    pub cooldown_ms: Option<u64>,
    /// Milliseconds left of the rest of a key the provider said is out of credit.
    pub spent_ms: Option<u64>,
}

/// The limiters of every key of one deployment, reading the clock `C` (see [`super::clock`]).
pub struct KeyPool<C: Clock = DefaultClock> {
    deployment: String,
    keys: Vec<KeyLimiter<C>>,
    next: AtomicUsize,
    /// What cooldowns count their milliseconds from.
    epoch: C::Instant,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for KeyPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("deployment", &self.deployment)
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl KeyPool {
    /// The buckets for `keys` (`id`, quota, the key's credit), in the deployment's key order.
    pub fn new(
        deployment: &str,
        keys: impl IntoIterator<Item = (String, KeyQuota, Arc<Credit>)>,
    ) -> Self {
        KeyPool::with_clock(deployment, keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> KeyPool<C> {
    /// [`KeyPool::new`] on `clock` (a test's [`super::clock::FakeRelativeClock`]).
    pub fn with_clock(
        deployment: &str,
        keys: impl IntoIterator<Item = (String, KeyQuota, Arc<Credit<C>>)>,
        clock: C,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(id, quota, credit)| KeyLimiter {
                id,
                buckets: Capacity::Own(KeyBuckets::new(quota, &clock)),
                cooldown: Cooldown::default(),
                credit,
            })
            .collect();
        KeyPool::of(deployment, keys, clock)
    }

    /// A pool whose keys' capacity is the cluster's: each key's [`SharedKey`] (in the
    /// deployment's key order) with its credit.
    pub fn shared(
        deployment: &str,
        keys: impl IntoIterator<Item = (Arc<SharedKey<C>>, Arc<Credit<C>>)>,
        clock: C,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(shared, credit)| KeyLimiter {
                id: shared.key_id.clone(),
                buckets: Capacity::Shared(shared),
                cooldown: Cooldown::default(),
                credit,
            })
            .collect();
        KeyPool::of(deployment, keys, clock)
    }

    fn of(deployment: &str, keys: Vec<KeyLimiter<C>>, clock: C) -> Self {
        KeyPool {
            deployment: deployment.to_string(),
            keys,
            next: AtomicUsize::new(0),
            epoch: clock.now(),
            clock,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Milliseconds from the epoch to `now`, as cooldowns count.
    fn ms_at(&self, now: C::Instant) -> u64 {
        between(self.epoch, now).as_millis() as u64
    }

    /// Finds a key with room for one call of `estimate` tokens and takes the cells, starting
    /// at a rotating offset so keys with room share the load.
    pub fn admit(&self, estimate: u32) -> Admission {
        let len = self.keys.len();
        if len == 0 {
            return Admission::Wait {
                wait: Duration::from_secs(1),
                busy: Busy::Limits,
            };
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let now_ms = self.ms_at(now);
        let mut soonest: Option<(Duration, Busy)> = None;
        let mut note = |wait: Duration, busy: Busy| {
            // A key limited by our own buckets beats one cooling down at the same wait: the
            // deployment is then only busy, not refusing.
            let better = match soonest {
                None => true,
                Some((w, b)) => wait < w || (wait == w && b == Busy::Cooldown),
            };
            if better {
                soonest = Some((wait, busy));
            }
        };
        // Spent keys are the last resort of an answer: only when no key is merely busy.
        let mut spent: Option<Duration> = None;
        let mut largest_burst = 0u32;
        for i in 0..len {
            let index = (start + i) % len;
            let key = &self.keys[index];
            if let Some(burst) = key.buckets.tokens_burst() {
                largest_burst = largest_burst.max(burst);
                if estimate > burst {
                    continue;
                }
            } else {
                largest_burst = u32::MAX;
            }
            if let Some(left) = key.credit.spent_for(now) {
                spent = Some(spent.map_or(left, |s| s.min(left)));
                continue;
            }
            if let Some(left) = key.cooldown.left(now_ms) {
                note(left, Busy::Cooldown);
                continue;
            }
            match key.buckets.take(estimate, now) {
                Ok(()) => return Admission::Admitted(index),
                Err(Some((wait, busy))) => note(wait, busy),
                Err(None) => {}
            }
        }
        match (soonest, spent) {
            (Some((wait, busy)), _) => Admission::Wait { wait, busy },
            (None, Some(wait)) => Admission::Wait {
                wait,
                busy: Busy::Spent,
            },
            (None, None) => Admission::Never(OverBurst {
                deployment: self.deployment.clone(),
                estimate,
                largest: largest_burst,
            }),
        }
    }

    /// The provider refused key `index` (429) or said it is spent: admit nothing on it for
    /// `wait`. A later, shorter cooldown never shortens a longer one.
    pub fn cool_down(&self, index: usize, wait: Duration) {
        if let Some(key) = self.keys.get(index) {
            let now = self.clock.now();
            key.cooldown.extend(self.ms_at(now), wait);
            if let Capacity::Shared(shared) = &key.buckets {
                shared.tell(false, after(now, wait));
            }
        }
    }

    /// The provider said key `index` is out of credit: it takes nothing for `rest`, on every
    /// deployment that shares it ([`Credit::spend`]).
    pub fn spend(&self, index: usize, rest: Duration) {
        if let Some(key) = self.keys.get(index) {
            let now = self.clock.now();
            key.credit.spend(now, rest);
            if let Capacity::Shared(shared) = &key.buckets {
                shared.tell(true, after(now, rest));
            }
        }
    }

    /// Another process of the cluster told that key `key_id` rests for `rest` (a cooldown,
    /// or out of credit when `spent`): it rests here too, and is not told again.
    pub fn rest_from_cluster(&self, key_id: &str, spent: bool, rest: Duration) {
        let Some(key) = self.keys.iter().find(|key| key.id == key_id) else {
            return;
        };
        let now = self.clock.now();
        if spent {
            key.credit.spend(now, rest);
        } else {
            key.cooldown.extend(self.ms_at(now), rest);
        }
    }

    /// The keys whose capacity is the cluster's.
    pub fn shared_keys(&self) -> impl Iterator<Item = &Arc<SharedKey<C>>> {
        self.keys.iter().filter_map(|key| match &key.buckets {
            Capacity::Shared(shared) => Some(shared),
            Capacity::Own(_) => None,
        })
    }

    /// The time this pool reads.
    pub fn now(&self) -> C::Instant {
        self.clock.now()
    }

    /// Each key's configured limits, what it had left after its last call, its cooldown and
    /// its rest when spent.
    pub fn capacity(&self, quotas: &[KeyQuota]) -> Vec<KeyCapacity> {
        let now = self.clock.now();
        let now_ms = self.ms_at(now);
        self.keys
            .iter()
            .zip(quotas)
            .map(|(key, quota)| {
                let [requests, tokens, daily] = key.buckets.remaining(now);
                KeyCapacity {
                    id: key.id.clone(),
                    requests_remaining: requests,
                    requests_per_minute: quota.requests_per_minute,
                    tokens_remaining: tokens,
                    tokens_per_minute: quota.tokens_per_minute,
                    requests_today_remaining: daily,
                    requests_per_day: quota.requests_per_day,
                    cooldown_ms: key
                        .cooldown
                        .left(now_ms)
                        .map(|left| left.as_millis() as u64),
                    spent_ms: key
                        .credit
                        .spent_for(now)
                        .map(|left| left.as_millis() as u64),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::clock::FakeRelativeClock;
    use crate::limits::SPENT_KEY_REST;

    const SECOND: Duration = Duration::from_secs(1);

    fn quota(rpm: Option<u32>, tpm: Option<u32>) -> KeyQuota {
        KeyQuota {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            requests_per_day: None,
        }
    }

    /// A pool of keys `k0`, `k1`, … on a clock the test moves.
    fn pool(quotas: &[KeyQuota]) -> (KeyPool<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let keys = quotas
            .iter()
            .enumerate()
            .map(|(i, q)| (format!("k{i}"), *q, Arc::default()));
        (KeyPool::with_clock("d", keys, clock.clone()), clock)
    }

    #[test]
    fn requests_per_minute_admit_the_burst_then_wait() {
        let (p, clock) = pool(&[quota(Some(3), None)]);
        for _ in 0..3 {
            assert_eq!(p.admit(10), Admission::Admitted(0));
        }
        // A cell returns every 20 s: the wait is to the next one, and then it is there.
        assert_eq!(
            p.admit(10),
            Admission::Wait {
                wait: 20 * SECOND,
                busy: Busy::Limits
            }
        );
        clock.advance(19 * SECOND);
        assert_eq!(
            p.admit(10),
            Admission::Wait {
                wait: SECOND,
                busy: Busy::Limits
            }
        );
        clock.advance(SECOND);
        assert_eq!(p.admit(10), Admission::Admitted(0));
    }

    #[test]
    fn tokens_per_minute_take_the_estimate() {
        let (p, clock) = pool(&[quota(None, Some(1000))]);
        assert_eq!(p.admit(600), Admission::Admitted(0));
        // 200 more tokens are needed: 12 s of refill at 1000/min.
        assert_eq!(
            p.admit(600),
            Admission::Wait {
                wait: 12 * SECOND,
                busy: Busy::Limits
            }
        );
        assert_eq!(p.admit(400), Admission::Admitted(0));
        clock.advance(36 * SECOND);
        assert_eq!(p.admit(600), Admission::Admitted(0));
    }

    #[test]
    fn an_estimate_over_every_burst_is_never_admitted_and_says_why() {
        let (p, _) = pool(&[quota(None, Some(1000)), quota(None, Some(2000))]);
        match p.admit(5000) {
            Admission::Never(e) => {
                assert_eq!(e.largest, 2000);
                let text = e.to_string();
                assert!(
                    text.contains("5000 tokens") && text.contains("tokens_per_minute"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Over one key's burst only: the other key takes it.
        assert_eq!(p.admit(1500), Admission::Admitted(1));
    }

    #[test]
    fn keys_share_the_load_and_none_is_refused_while_another_has_room() {
        let (p, _) = pool(&[quota(Some(5), None); 3]);
        let mut used = [0; 3];
        for _ in 0..15 {
            match p.admit(1) {
                Admission::Admitted(i) => used[i] += 1,
                other => panic!("refused with room left: {other:?} after {used:?}"),
            }
        }
        assert_eq!(used, [5, 5, 5]);
        assert!(matches!(p.admit(1), Admission::Wait { .. }));
    }

    #[test]
    fn a_cooldown_skips_the_key_until_it_ends() {
        let (p, clock) = pool(&[quota(None, None), quota(None, None)]);
        p.cool_down(0, 30 * SECOND);
        for _ in 0..4 {
            assert_eq!(p.admit(1), Admission::Admitted(1));
        }
        p.cool_down(1, 10 * SECOND);
        assert_eq!(
            p.admit(1),
            Admission::Wait {
                wait: 10 * SECOND,
                busy: Busy::Cooldown
            }
        );
        // A shorter cooldown does not cut a longer one short.
        p.cool_down(0, Duration::from_millis(1));
        let cooldown = |index: usize| p.capacity(&[KeyQuota::default(); 2])[index].cooldown_ms;
        assert_eq!(cooldown(0), Some(30_000));
        // Each key comes back when its cooldown ends, and not before.
        clock.advance(10 * SECOND);
        assert_eq!(cooldown(1), None);
        for _ in 0..4 {
            assert_eq!(p.admit(1), Admission::Admitted(1));
        }
        clock.advance(20 * SECOND);
        assert_eq!(cooldown(0), None);
        let used: Vec<Admission> = (0..2).map(|_| p.admit(1)).collect();
        assert!(used.contains(&Admission::Admitted(0)), "{used:?}");
    }

    /// A spent key is skipped without a wait while another has credit; when all are spent
    /// the pool says so rather than offer a wait, and a pool sharing the credit sees it too.
    #[test]
    fn a_spent_key_is_skipped_and_a_pool_of_spent_keys_says_so() {
        let clock = FakeRelativeClock::default();
        let credits: Vec<Arc<Credit<FakeRelativeClock>>> = (0..2).map(|_| Arc::default()).collect();
        let pool_of = |name: &str| {
            KeyPool::with_clock(
                name,
                credits
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("k{i}"), quota(Some(100), None), c.clone())),
                clock.clone(),
            )
        };
        let (a, b) = (pool_of("a"), pool_of("b"));
        a.spend(0, SPENT_KEY_REST);
        for _ in 0..3 {
            assert_eq!(a.admit(1), Admission::Admitted(1));
            assert_eq!(b.admit(1), Admission::Admitted(1), "the credit is shared");
        }
        // Rate-limit trouble on a key with credit is still a wait worth taking.
        let busy = pool_of("c");
        busy.cool_down(1, SECOND);
        match busy.admit(1) {
            Admission::Wait { busy, .. } => assert_eq!(busy, Busy::Cooldown),
            other => panic!("{other:?}"),
        }
        b.spend(1, 5 * SECOND);
        for pool in [&a, &b] {
            assert_eq!(
                pool.admit(1),
                Admission::Wait {
                    wait: 5 * SECOND,
                    busy: Busy::Spent
                },
                "the sooner of the rests"
            );
        }
        let view = a.capacity(&[KeyQuota::default(); 2]);
        assert_eq!(view[0].spent_ms, Some(3_600_000), "{view:?}");
        // Credit back on key 1 after its rest, on both pools; key 0 rests on.
        clock.advance(5 * SECOND);
        assert_eq!(a.admit(1), Admission::Admitted(1));
        assert_eq!(b.admit(1), Admission::Admitted(1));
        clock.advance(SPENT_KEY_REST);
        let used: Vec<Admission> = (0..2).map(|_| a.admit(1)).collect();
        assert!(used.contains(&Admission::Admitted(0)), "{used:?}");
    }

    #[test]
    fn capacity_reports_what_is_left() {
        let q = [KeyQuota {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(1000),
            requests_per_day: Some(100),
        }];
        let (p, _) = pool(&q);
        p.admit(250);
        let c = &p.capacity(&q)[0];
        assert_eq!(c.requests_remaining, Some(9));
        assert_eq!(c.tokens_remaining, Some(750));
        assert_eq!(c.requests_today_remaining, Some(99));
        assert_eq!(c.cooldown_ms, None);
    }
}
