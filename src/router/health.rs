//! Live health of one deployment: a rolling error rate and latencies, and the circuit
//! breaker built on them.
//!
//! A provider that goes dark must stop receiving traffic quickly (every call to it costs a
//! job an attempt and its timeout), and must get traffic back once it recovers without anyone
//! intervening. So:
//!
//! - **closed**: calls flow; each outcome enters a window of the last `window` calls. When
//!   at least `min_calls` are in it and the share of failures reaches `error_threshold`, the
//!   circuit opens.
//! - **open**: the router skips the deployment for `cooldown`.
//! - **half-open**: after the cooldown one trial call goes through (the first caller to ask
//!   claims it; others still skip). Its success closes the circuit with a fresh window; its
//!   failure opens it for another cooldown.
//!
//! Failures are what says the deployment itself is unwell: server errors, timeouts,
//! connection failures, broken answers. A 429 is a key's business (a cooldown in
//! [`crate::limits`]) and a 400 the request's, so neither counts; they do show the
//! deployment answers, which is enough to close a half-open circuit.

use crate::config::HealthConfig;
use crate::limits::clock::{after, between, Clock, DefaultClock};
use crate::providers::ErrorKind;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Latencies kept per deployment for the percentiles: enough for a stable p99, bounded.
const LATENCY_SAMPLES: usize = 512;

/// What an attempt's outcome says about the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Unhealthy,
    /// Says nothing about the deployment's health (429, a bad request), but it answered.
    Answered,
}

impl Verdict {
    pub fn of(result: Result<(), ErrorKind>) -> Verdict {
        match result {
            Ok(()) => Verdict::Healthy,
            Err(
                ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::InvalidResponse,
            ) => Verdict::Unhealthy,
            Err(_) => Verdict::Answered,
        }
    }
}

/// The circuit's state, as `GET /v1/providers` names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    // In order of caution, which merging several processes' views relies on.
    Closed,
    HalfOpen,
    Open,
}

#[derive(Debug)]
enum Circuit<I> {
    Closed,
    Open {
        until: I,
        /// Opened by this process's own calls (`false`: adopted from another process of
        /// the cluster, which is not reported on, so an open circuit does not echo).
        here: bool,
    },
    /// `probing`: the trial call is out.
    HalfOpen {
        probing: bool,
    },
}

/// May a call go to the deployment now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Yes, as usual.
    Open,
    /// Yes, as the half-open trial: report its outcome, or [`Health::release`] it unused.
    Probe,
    /// No: the circuit is open for this much longer (or a trial is out).
    Shut(Duration),
}

#[derive(Debug)]
struct State<I> {
    circuit: Circuit<I>,
    /// Recent outcomes, `true` = failure.
    window: VecDeque<bool>,
    failures: u32,
    total_ms: VecDeque<u32>,
    first_token_ms: VecDeque<u32>,
}

/// One deployment's health, its circuit timed on the clock `C` (the one the limits read:
/// [`crate::limits::clock`]).
#[derive(Debug)]
pub struct Health<C: Clock = DefaultClock> {
    config: HealthConfig,
    state: Mutex<State<C::Instant>>,
    clock: C,
}

/// What `GET /v1/providers` shows of a deployment's health.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthView {
    pub state: CircuitState,
    /// Share of failures in the window (0 when empty).
    pub error_rate: f64,
    pub calls_in_window: usize,
    /// Milliseconds until an open circuit lets a trial call through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopens_in_ms: Option<u64>,
    pub latency_ms: Percentiles,
    pub first_token_ms: Percentiles,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: Option<u32>,
    pub p99: Option<u32>,
    pub samples: usize,
}

impl Percentiles {
    fn of(samples: &VecDeque<u32>) -> Percentiles {
        let mut sorted: Vec<u32> = samples.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            (!sorted.is_empty()).then(|| {
                let rank = ((sorted.len() as f64) * q).ceil() as usize;
                sorted[rank.clamp(1, sorted.len()) - 1]
            })
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            samples: sorted.len(),
        }
    }
}

impl Percentiles {
    /// Several processes' percentiles as one: the p50s averaged by their samples (an
    /// estimate: the samples themselves stay in each process), the worst p99.
    fn merge(all: impl Iterator<Item = Percentiles> + Clone) -> Percentiles {
        let samples: usize = all.clone().map(|p| p.samples).sum();
        let weighted: f64 = all
            .clone()
            .filter_map(|p| p.p50.map(|p50| f64::from(p50) * p.samples as f64))
            .sum();
        Percentiles {
            p50: (samples > 0).then(|| (weighted / samples as f64).round() as u32),
            p99: all.filter_map(|p| p.p99).max(),
            samples,
        }
    }
}

impl HealthView {
    /// What several processes see of one deployment, as one view: the most cautious circuit
    /// (open over half-open over closed) and the longest wait to reopen, the calls of all,
    /// their error rate weighted by calls, the latencies merged ([`Percentiles::merge`]).
    /// `None` when no process reported.
    pub fn merge(views: &[HealthView]) -> Option<HealthView> {
        let state = views.iter().map(|v| v.state).max()?;
        let calls: usize = views.iter().map(|v| v.calls_in_window).sum();
        let failures: f64 = views
            .iter()
            .map(|v| v.error_rate * v.calls_in_window as f64)
            .sum();
        Some(HealthView {
            state,
            error_rate: if calls == 0 {
                0.0
            } else {
                failures / calls as f64
            },
            calls_in_window: calls,
            reopens_in_ms: views
                .iter()
                .filter(|v| v.state == CircuitState::Open)
                .filter_map(|v| v.reopens_in_ms)
                .max(),
            latency_ms: Percentiles::merge(views.iter().map(|v| v.latency_ms)),
            first_token_ms: Percentiles::merge(views.iter().map(|v| v.first_token_ms)),
        })
    }
}

fn push_bounded(samples: &mut VecDeque<u32>, value: Duration) {
    if samples.len() == LATENCY_SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value.as_millis().min(u128::from(u32::MAX)) as u32);
}

impl Health {
    pub fn new(config: HealthConfig) -> Health {
        Health::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock> Health<C> {
    /// [`Health::new`] on `clock` (a test's fake one).
    pub fn with_clock(config: HealthConfig, clock: C) -> Health<C> {
        Health {
            config,
            clock,
            state: Mutex::new(State {
                circuit: Circuit::Closed,
                window: VecDeque::new(),
                failures: 0,
                total_ms: VecDeque::new(),
                first_token_ms: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<C::Instant>> {
        // Plain counters: still meaningful after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks to send a call; an open circuit whose cooldown is over turns half-open and hands
    /// this caller the trial.
    pub fn gate(&self) -> Gate {
        let mut state = self.lock();
        match state.circuit {
            Circuit::Closed => Gate::Open,
            Circuit::Open { until, .. } => {
                let now = self.clock.now();
                if now >= until {
                    state.circuit = Circuit::HalfOpen { probing: true };
                    Gate::Probe
                } else {
                    Gate::Shut(between(now, until))
                }
            }
            Circuit::HalfOpen { probing: false } => {
                state.circuit = Circuit::HalfOpen { probing: true };
                Gate::Probe
            }
            // The trial is out; whoever asks again is told to come back shortly.
            Circuit::HalfOpen { probing: true } => Gate::Shut(Duration::from_secs(1)),
        }
    }

    /// Gives back a trial that was claimed but not used (no key had room).
    pub fn release(&self) {
        let mut state = self.lock();
        if let Circuit::HalfOpen { probing: true } = state.circuit {
            state.circuit = Circuit::HalfOpen { probing: false };
        }
    }

    /// Records one attempt's outcome and latencies.
    pub fn record(&self, verdict: Verdict, total: Duration, first_token: Option<Duration>) {
        let mut state = self.lock();
        if verdict != Verdict::Unhealthy {
            push_bounded(&mut state.total_ms, total);
            if let Some(first) = first_token {
                push_bounded(&mut state.first_token_ms, first);
            }
        }
        match state.circuit {
            Circuit::HalfOpen { .. } => {
                if verdict == Verdict::Unhealthy {
                    self.trip(&mut state);
                } else {
                    state.circuit = Circuit::Closed;
                    state.window.clear();
                    state.failures = 0;
                    tracing::info!("a trial call succeeded; circuit closed");
                }
            }
            // A late answer of a call sent before the circuit opened says nothing new.
            Circuit::Open { .. } => {}
            Circuit::Closed => {
                if verdict == Verdict::Answered {
                    return;
                }
                let failed = verdict == Verdict::Unhealthy;
                state.window.push_back(failed);
                state.failures += u32::from(failed);
                while state.window.len() > self.config.window as usize {
                    if state.window.pop_front() == Some(true) {
                        state.failures -= 1;
                    }
                }
                let calls = state.window.len() as u32;
                if calls >= self.config.min_calls.max(1)
                    && f64::from(state.failures) / f64::from(calls) >= self.config.error_threshold
                {
                    self.trip(&mut state);
                }
            }
        }
    }

    fn trip(&self, state: &mut State<C::Instant>) {
        state.circuit = Circuit::Open {
            until: after(self.clock.now(), self.config.cooldown),
            here: true,
        };
        state.window.clear();
        state.failures = 0;
        tracing::warn!(cooldown = ?self.config.cooldown, "circuit opened");
    }

    /// How long a circuit this process's own calls opened stays open, when it is open.
    pub fn opened_here_for(&self) -> Option<Duration> {
        match self.lock().circuit {
            Circuit::Open { until, here: true } => {
                Some(between(self.clock.now(), until)).filter(|left| !left.is_zero())
            }
            _ => None,
        }
    }

    /// Another process of the cluster opened the circuit for `rest`: a closed circuit opens
    /// here too (then lets its own trial through, as after its own cooldown). An open or
    /// half-open one is already cautious and stays as it is.
    pub fn adopt_open(&self, rest: Duration) {
        let mut state = self.lock();
        if let Circuit::Closed = state.circuit {
            state.circuit = Circuit::Open {
                until: after(self.clock.now(), rest),
                here: false,
            };
            state.window.clear();
            state.failures = 0;
            tracing::warn!(?rest, "circuit opened by another process of the cluster");
        }
    }

    pub fn view(&self) -> HealthView {
        let state = self.lock();
        let now = self.clock.now();
        let (circuit, reopens_in_ms) = match state.circuit {
            Circuit::Closed => (CircuitState::Closed, None),
            Circuit::Open { until, .. } => (
                CircuitState::Open,
                Some(between(now, until).as_millis() as u64),
            ),
            Circuit::HalfOpen { .. } => (CircuitState::HalfOpen, None),
        };
        let calls = state.window.len();
        HealthView {
            state: circuit,
            error_rate: if calls == 0 {
                0.0
            } else {
                f64::from(state.failures) / calls as f64
            },
            calls_in_window: calls,
            reopens_in_ms,
            latency_ms: Percentiles::of(&state.total_ms),
            first_token_ms: Percentiles::of(&state.first_token_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::clock::FakeRelativeClock;

    /// A deployment's health on a clock the test moves.
    fn health(cooldown: Duration) -> (Health<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let config = HealthConfig {
            window: 10,
            min_calls: 4,
            error_threshold: 0.5,
            cooldown,
        };
        (Health::with_clock(config, clock.clone()), clock)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn few_failures_do_not_open_the_circuit() {
        let (h, _) = health(Duration::from_secs(60));
        for _ in 0..3 {
            h.record(Verdict::Unhealthy, MS, None);
        }
        assert_eq!(h.gate(), Gate::Open, "under min_calls");
        let (h, _) = health(Duration::from_secs(60));
        for _ in 0..6 {
            h.record(Verdict::Healthy, MS, None);
        }
        for _ in 0..4 {
            h.record(Verdict::Unhealthy, MS, None);
        }
        assert_eq!(h.gate(), Gate::Open, "4 of 10 is under the threshold");
        h.record(Verdict::Unhealthy, MS, None);
        assert_eq!(h.view().state, CircuitState::Open, "5 of 10 reaches it");
    }

    #[test]
    fn rate_limits_and_bad_requests_do_not_count() {
        let (h, _) = health(Duration::from_secs(60));
        for _ in 0..10 {
            h.record(Verdict::Answered, MS, None);
        }
        assert_eq!(h.gate(), Gate::Open);
        assert_eq!(h.view().calls_in_window, 0);
        assert_eq!(Verdict::of(Err(ErrorKind::RateLimited)), Verdict::Answered);
        assert_eq!(Verdict::of(Err(ErrorKind::Connection)), Verdict::Unhealthy);
    }

    #[test]
    fn the_circuit_opens_then_lets_one_trial_through_and_closes_on_success() {
        let (h, clock) = health(Duration::from_secs(60));
        for _ in 0..4 {
            h.record(Verdict::Unhealthy, MS, None);
        }
        assert_eq!(h.view().state, CircuitState::Open);
        assert_eq!(h.view().reopens_in_ms, Some(60_000));
        clock.advance(Duration::from_secs(59));
        assert_eq!(h.gate(), Gate::Shut(Duration::from_secs(1)));
        // Cooldown over: one trial, the others wait.
        clock.advance(Duration::from_secs(1));
        assert_eq!(h.gate(), Gate::Probe);
        assert!(matches!(h.gate(), Gate::Shut(_)));
        // An unused trial is handed back.
        h.release();
        assert_eq!(h.gate(), Gate::Probe);
        h.record(Verdict::Healthy, MS, None);
        assert_eq!(h.view().state, CircuitState::Closed);
        assert_eq!(h.gate(), Gate::Open);
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_again() {
        let (h, clock) = health(Duration::from_secs(60));
        for _ in 0..4 {
            h.record(Verdict::Unhealthy, MS, None);
        }
        assert_eq!(h.gate(), Gate::Shut(Duration::from_secs(60)));
        clock.advance(Duration::from_secs(60));
        assert_eq!(h.gate(), Gate::Probe);
        h.record(Verdict::Unhealthy, MS, None);
        // Open for a whole cooldown again, from the trial's failure.
        assert_eq!(h.view().state, CircuitState::Open);
        assert_eq!(h.gate(), Gate::Shut(Duration::from_secs(60)));
    }

    #[test]
    fn an_adopted_open_circuit_is_skipped_but_not_reported_as_opened_here() {
        let (h, clock) = health(Duration::from_secs(60));
        h.adopt_open(Duration::from_secs(5));
        assert_eq!(h.view().state, CircuitState::Open);
        assert_eq!(h.opened_here_for(), None);
        assert_eq!(h.gate(), Gate::Shut(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(5));
        assert_eq!(h.gate(), Gate::Probe, "its own trial after the rest");
        // A circuit opened here is reported, and adopting does not shorten it.
        h.record(Verdict::Unhealthy, MS, None);
        h.adopt_open(Duration::from_secs(1));
        assert_eq!(h.opened_here_for(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn views_of_several_processes_merge_into_the_most_cautious() {
        let view = |state, rate, calls, p50, p99, samples| HealthView {
            state,
            error_rate: rate,
            calls_in_window: calls,
            reopens_in_ms: (state == CircuitState::Open).then_some(3000),
            latency_ms: Percentiles { p50, p99, samples },
            first_token_ms: Percentiles {
                p50: None,
                p99: None,
                samples: 0,
            },
        };
        let merged = HealthView::merge(&[
            view(CircuitState::Closed, 0.5, 10, Some(100), Some(200), 30),
            view(CircuitState::Open, 1.0, 30, Some(300), Some(900), 10),
            view(CircuitState::Closed, 0.0, 0, None, None, 0),
        ])
        .unwrap();
        assert_eq!(merged.state, CircuitState::Open);
        assert_eq!(merged.calls_in_window, 40);
        assert!((merged.error_rate - 35.0 / 40.0).abs() < 1e-9);
        assert_eq!(merged.reopens_in_ms, Some(3000));
        assert_eq!(merged.latency_ms.p50, Some(150), "(100×30 + 300×10) / 40");
        assert_eq!(merged.latency_ms.p99, Some(900));
        assert_eq!(merged.first_token_ms.p50, None);
        assert_eq!(HealthView::merge(&[]), None);
    }

    #[test]
    fn percentiles_of_latencies() {
        let (h, _) = health(Duration::from_secs(60));
        for ms in 1..=100 {
            h.record(
                Verdict::Healthy,
                Duration::from_millis(ms),
                Some(Duration::from_millis(ms / 2)),
            );
        }
        let v = h.view();
        assert_eq!(v.latency_ms.p50, Some(50));
        assert_eq!(v.latency_ms.p99, Some(99));
        assert_eq!(v.first_token_ms.p50, Some(25));
        assert_eq!(v.latency_ms.samples, 100);
        assert_eq!(v.error_rate, 0.0);
    }
}
