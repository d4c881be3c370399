//! The providers' batch tiers, simulated: what the three batch APIs share.
//!
//! Sluice sends work that can wait to the providers' batch APIs (half the price, answers
//! within 24 hours). To develop and test that tier without a provider, the simulator serves
//! those APIs too, on its one port, each in its provider's documented wire format so the
//! official SDKs accept it: OpenAI's Files and Batches ([`openai`]), Anthropic's Message
//! Batches ([`anthropic`]) and Gemini's batch mode with inline requests ([`gemini`]). Each
//! of those modules only reads and writes its format; this one holds what they have in
//! common:
//!
//! - **The answers.** Every item is answered by the same simulated model as a realtime call
//!   of the same request, through the same pipeline and the family's own request reader and
//!   response builder (`pipeline::batch_item` with the family's `WireFormat`), so text, tool calls,
//!   JSON mode and usage match the realtime endpoints exactly. An item's answer is decided
//!   when the batch is created ([`Outcome`]); time only decides when it is revealed.
//!   Realtime faults (fail plans, random faults, latency) do not apply to items; a
//!   `[sim batch=error|invalid|expire]` directive in an item's text makes that item fail
//!   instead (a realtime call ignores it).
//! - **The lifecycle** ([`phase`]), a pure function of the time since creation: items are
//!   answered one after another over [`SimConfig::batch_turnaround`](super::SimConfig), and
//!   the batch ends when all are. When the turnaround is longer than
//!   [`SimConfig::batch_window`](super::SimConfig) (the 24 h completion window), the batch
//!   ends at the window instead and the items not answered by then expire. A cancel freezes
//!   the answered items, and after [`CANCEL_SETTLE`] the batch ends with the others
//!   cancelled. State is derived at each request; there is no background task.
//! - **The store**: batches live in memory ([`Shelf`], one per family), newest last, for as
//!   long as the simulator runs. A simulator serves tests and demos, not millions of
//!   batches, so lookups are linear.

pub(crate) mod anthropic;
pub(crate) mod gemini;
pub(crate) mod openai;

use super::{lock, Family, SimState};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The three batch APIs' routes. OpenAI's `/v1/batches` and `/v1/batches/{id}` are also
/// Gemini's paths under `/v1` (the `google-genai` SDK's default version), so those two go by
/// the caller's credentials: a Google API key (`x-goog-api-key` or `?key=`) means Gemini.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    openai::routes()
        .merge(anthropic::routes())
        .merge(gemini::routes())
        .route(
            "/v1/batches",
            axum::routing::post(openai::create).get(list_v1),
        )
        .route("/v1/batches/{id}", get(retrieve_v1).post(gemini::cancel))
}

fn google_key(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    crate::gemini::check_key(headers, query).is_ok()
}

/// `GET /v1/batches`: OpenAI's list, or Gemini's for a Google key.
async fn list_v1(
    state: State<Arc<SimState>>,
    headers: HeaderMap,
    query: Query<HashMap<String, String>>,
) -> Response {
    if google_key(&headers, &query) {
        gemini::list(state, query, headers).await
    } else {
        openai::list(state, headers, query).await
    }
}

/// `GET /v1/batches/{id}`: OpenAI's batch, or Gemini's for a Google key.
async fn retrieve_v1(
    state: State<Arc<SimState>>,
    headers: HeaderMap,
    id: Path<String>,
    query: Query<HashMap<String, String>>,
) -> Response {
    if google_key(&headers, &query) {
        gemini::retrieve(state, id, query, headers).await
    } else {
        openai::retrieve(state, headers, id).await
    }
}

/// How long a cancelled batch stays `cancelling` / `canceling` before it ends: long enough
/// for a client to see the intermediate state the providers document, short for tests.
pub const CANCEL_SETTLE: Duration = Duration::from_millis(100);

/// What one item of a batch comes to, decided when the batch is created.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The family's response body, as the realtime endpoint would send it, and its usage.
    Answered { body: Value, usage: Usage },
    /// The error a realtime call would get: the HTTP status and the family's error body.
    Failed { status: u16, body: Value },
    /// `[sim batch=expire]`: never answered; expires when the batch ends.
    Expires,
}

/// Token counts of an answered item, for the batch totals OpenAI reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// One request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The client's key for it: `custom_id` (OpenAI, Anthropic); Gemini's inline requests
    /// have none, only `metadata`.
    pub custom_id: String,
    /// Gemini's per-request `metadata`, echoed on its response (`Null` elsewhere).
    pub metadata: Value,
    pub outcome: Outcome,
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Every item was answered (some may have failed or expired on their own).
    Completed,
    /// The completion window passed first; the items not answered expired.
    Expired,
    /// Cancelled; the items not answered were cancelled.
    Cancelled,
}

/// Where a batch is at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Items are being answered; the first `answered` are done.
    Running { answered: usize },
    /// A cancel was asked for and has not settled yet; `answered` stays as it was.
    Cancelling { answered: usize },
    /// Final, `after` the batch was created.
    Ended {
        end: End,
        answered: usize,
        after: Duration,
    },
}

impl Phase {
    pub fn answered(self) -> usize {
        match self {
            Phase::Running { answered }
            | Phase::Cancelling { answered }
            | Phase::Ended { answered, .. } => answered,
        }
    }

    pub fn end(self) -> Option<End> {
        match self {
            Phase::Ended { end, .. } => Some(end),
            _ => None,
        }
    }
}

/// How long batches take, from [`SimConfig`](super::SimConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// From creation until every item is answered.
    pub turnaround: Duration,
    /// The completion window: the batch ends here at the latest.
    pub window: Duration,
}

/// Where a batch of `items` requests is `elapsed` after its creation, given when (if ever)
/// a cancel was asked for.
pub(crate) fn phase(
    items: usize,
    elapsed: Duration,
    cancel_asked: Option<Duration>,
    timing: Timing,
) -> Phase {
    // Items are answered evenly over the turnaround, so a cancel or the window can cut a
    // batch half-way.
    let answered_by = |t: Duration| {
        if t >= timing.turnaround {
            items
        } else {
            (items as u128 * t.as_nanos() / timing.turnaround.as_nanos()) as usize
        }
    };
    let (natural_end, natural) = if timing.turnaround <= timing.window {
        (timing.turnaround, End::Completed)
    } else {
        (timing.window, End::Expired)
    };
    if let Some(asked) = cancel_asked.filter(|asked| *asked < natural_end) {
        let answered = answered_by(asked);
        let settled = asked + CANCEL_SETTLE;
        return if elapsed < settled {
            Phase::Cancelling { answered }
        } else {
            Phase::Ended {
                end: End::Cancelled,
                answered,
                after: settled,
            }
        };
    }
    if elapsed >= natural_end {
        Phase::Ended {
            end: natural,
            answered: answered_by(natural_end),
            after: natural_end,
        }
    } else {
        Phase::Running {
            answered: answered_by(elapsed),
        }
    }
}

/// What an item has come to at a given phase of its batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ItemState<'a> {
    Pending,
    Answered { body: &'a Value, usage: Usage },
    Failed { status: u16, body: &'a Value },
    Expired,
    Cancelled,
}

impl Item {
    /// This item's state when it is the `index`-th of its batch and the batch is at `phase`.
    pub fn state(&self, index: usize, phase: Phase) -> ItemState<'_> {
        let ended = phase.end();
        match &self.outcome {
            Outcome::Expires if ended.is_some() => ItemState::Expired,
            Outcome::Answered { body, usage } if index < phase.answered() => ItemState::Answered {
                body,
                usage: *usage,
            },
            Outcome::Failed { status, body } if index < phase.answered() => ItemState::Failed {
                status: *status,
                body,
            },
            _ => match ended {
                Some(End::Cancelled) => ItemState::Cancelled,
                // Completed answers every item, so what is left here expired.
                Some(End::Expired | End::Completed) => ItemState::Expired,
                None => ItemState::Pending,
            },
        }
    }
}

/// How many items are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub pending: u64,
    pub succeeded: u64,
    pub errored: u64,
    pub expired: u64,
    pub cancelled: u64,
    /// Over the succeeded items.
    pub usage: Usage,
}

/// One batch of any family; `D` is what its family records beyond the items.
#[derive(Debug, Clone)]
pub(crate) struct Batch<D> {
    pub id: String,
    pub created_at: DateTime<Utc>,
    started: Instant,
    /// How long after creation a cancel was asked for.
    cancel_asked: Option<Duration>,
    pub items: Vec<Item>,
    pub detail: D,
}

impl<D> Batch<D> {
    pub fn new(id: String, items: Vec<Item>, detail: D) -> Self {
        Batch {
            id,
            created_at: Utc::now(),
            started: Instant::now(),
            cancel_asked: None,
            items,
            detail,
        }
    }

    /// Where the batch is now.
    pub fn phase(&self, timing: Timing) -> Phase {
        phase(
            self.items.len(),
            self.started.elapsed(),
            self.cancel_asked,
            timing,
        )
    }

    /// Asks for a cancel, unless the batch has ended or one was asked for already.
    pub fn cancel(&mut self, timing: Timing) {
        if self.cancel_asked.is_none() && self.phase(timing).end().is_none() {
            self.cancel_asked = Some(self.started.elapsed());
        }
    }

    /// When the cancel was asked for.
    pub fn cancel_asked_at(&self) -> Option<DateTime<Utc>> {
        self.cancel_asked.map(|after| self.at(after))
    }

    /// The wall-clock time `after` creation.
    pub fn at(&self, after: Duration) -> DateTime<Utc> {
        self.created_at + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
    }

    /// The items with their states at `phase`, in order.
    pub fn states(&self, phase: Phase) -> impl Iterator<Item = (&Item, ItemState<'_>)> {
        self.items
            .iter()
            .enumerate()
            .map(move |(index, item)| (item, item.state(index, phase)))
    }

    pub fn tally(&self, phase: Phase) -> Tally {
        let mut tally = Tally::default();
        for (_, state) in self.states(phase) {
            match state {
                ItemState::Pending => tally.pending += 1,
                ItemState::Answered { usage, .. } => {
                    tally.succeeded += 1;
                    tally.usage += usage;
                }
                ItemState::Failed { .. } => tally.errored += 1,
                ItemState::Expired => tally.expired += 1,
                ItemState::Cancelled => tally.cancelled += 1,
            }
        }
        tally
    }
}

/// One family's batches, oldest first.
#[derive(Debug)]
pub(crate) struct Shelf<D> {
    batches: Mutex<Vec<Batch<D>>>,
}

impl<D> Default for Shelf<D> {
    fn default() -> Self {
        Shelf {
            batches: Mutex::new(Vec::new()),
        }
    }
}

impl<D> Shelf<D> {
    pub fn add(&self, batch: Batch<D>) {
        lock(&self.batches).push(batch);
    }

    /// Runs `f` on the batch `id`; `None` when there is none.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&mut Batch<D>) -> R) -> Option<R> {
        lock(&self.batches)
            .iter_mut()
            .find(|batch| batch.id == id)
            .map(f)
    }

    /// Every batch rendered by `f`, newest first, with its id.
    pub fn newest_first<R>(&self, f: impl Fn(&Batch<D>) -> R) -> Vec<(String, R)> {
        lock(&self.batches)
            .iter()
            .rev()
            .map(|batch| (batch.id.clone(), f(batch)))
            .collect()
    }

    /// Runs `f` on the first batch `find` picks out of all of them.
    pub fn find_map<R>(&self, find: impl FnMut(&Batch<D>) -> Option<R>) -> Option<R> {
        lock(&self.batches).iter().find_map(find)
    }
}

/// One page of a newest-first list: the entries after the one with id `after` (from the
/// start when `None`), at most `limit`, and whether more follow.
pub(crate) fn page<R>(
    entries: Vec<(String, R)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<(String, R)>, bool) {
    let start = after
        .and_then(|after| entries.iter().position(|(id, _)| id == after))
        .map_or(0, |at| at + 1);
    let mut rest: Vec<_> = entries.into_iter().skip(start).collect();
    let has_more = rest.len() > limit;
    rest.truncate(limit);
    (rest, has_more)
}

/// A list call's `limit`: 20 when absent (OpenAI's and Anthropic's default), else a whole
/// number from 1 to `max`; anything else comes back as the text given, for the family to
/// word its own error.
pub(crate) fn page_limit(query: &HashMap<String, String>, max: usize) -> Result<usize, &str> {
    match query.get("limit") {
        None => Ok(20),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(text),
        },
    }
}

/// A page as OpenAI and Anthropic list it: `{data, first_id, last_id, has_more}`.
pub(crate) fn list_body(page: Vec<(String, Value)>, has_more: bool) -> Value {
    serde_json::json!({
        "first_id": page.first().map(|(id, _)| id),
        "last_id": page.last().map(|(id, _)| id),
        "has_more": has_more,
        "data": page.into_iter().map(|(_, object)| object).collect::<Vec<_>>(),
    })
}

/// Everything the batch APIs keep, in the simulator's shared state.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    pub openai: Shelf<openai::Detail>,
    pub openai_files: Mutex<Vec<openai::File>>,
    pub anthropic: Shelf<()>,
    pub gemini: Shelf<gemini::Detail>,
    created: [AtomicU64; 3],
    items: AtomicU64,
}

impl Batches {
    /// Counts a batch of `items` requests created on `family`'s API.
    pub fn count(&self, family: Family, items: usize) {
        self.created[family as usize].fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
    }

    pub fn created(&self, family: Family) -> u64 {
        self.created[family as usize].load(Ordering::Relaxed)
    }

    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }
}

/// An RFC 3339 timestamp with microseconds, as Anthropic and Google write them.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A fresh id: `prefix` and 24 hex digits, the length of the providers' own.
pub(crate) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIMING: Timing = Timing {
        turnaround: Duration::from_secs(4),
        window: Duration::from_secs(10),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn items_are_answered_over_the_turnaround_then_the_batch_completes() {
        assert_eq!(
            phase(4, ms(0), None, TIMING),
            Phase::Running { answered: 0 }
        );
        assert_eq!(
            phase(4, ms(2500), None, TIMING),
            Phase::Running { answered: 2 }
        );
        assert_eq!(
            phase(4, ms(4000), None, TIMING),
            Phase::Ended {
                end: End::Completed,
                answered: 4,
                after: ms(4000)
            }
        );
        let instant = Timing {
            turnaround: Duration::ZERO,
            ..TIMING
        };
        assert_eq!(phase(3, ms(0), None, instant).end(), Some(End::Completed));
    }

    #[test]
    fn a_turnaround_past_the_window_expires_the_batch_at_the_window() {
        let slow = Timing {
            turnaround: ms(2000),
            window: ms(500),
        };
        assert_eq!(
            phase(4, ms(400), None, slow),
            Phase::Running { answered: 0 }
        );
        assert_eq!(
            phase(4, ms(600), None, slow),
            Phase::Ended {
                end: End::Expired,
                answered: 1,
                after: ms(500)
            }
        );
    }

    #[test]
    fn a_cancel_freezes_the_answers_and_settles() {
        let asked = Some(ms(2000));
        assert_eq!(
            phase(4, ms(2050), asked, TIMING),
            Phase::Cancelling { answered: 2 }
        );
        assert_eq!(
            phase(4, ms(9000), asked, TIMING),
            Phase::Ended {
                end: End::Cancelled,
                answered: 2,
                after: ms(2000) + CANCEL_SETTLE
            }
        );
        // A cancel after the end changes nothing.
        assert_eq!(
            phase(4, ms(5000), Some(ms(4500)), TIMING).end(),
            Some(End::Completed)
        );
    }

    #[test]
    fn item_states_follow_their_outcome_and_the_batch() {
        let answered = Item {
            custom_id: "a".into(),
            metadata: Value::Null,
            outcome: Outcome::Answered {
                body: json!({"ok": true}),
                usage: Usage::default(),
            },
        };
        let expires = Item {
            outcome: Outcome::Expires,
            ..answered.clone()
        };
        let running = Phase::Running { answered: 1 };
        assert!(matches!(
            answered.state(0, running),
            ItemState::Answered { .. }
        ));
        assert_eq!(answered.state(1, running), ItemState::Pending);
        assert_eq!(expires.state(0, running), ItemState::Pending);
        let done = Phase::Ended {
            end: End::Completed,
            answered: 2,
            after: ms(1),
        };
        assert_eq!(expires.state(0, done), ItemState::Expired);
        let cancelled = Phase::Ended {
            end: End::Cancelled,
            answered: 1,
            after: ms(1),
        };
        assert_eq!(answered.state(1, cancelled), ItemState::Cancelled);
        assert!(matches!(
            answered.state(0, cancelled),
            ItemState::Answered { .. }
        ));
    }

    #[test]
    fn pages_follow_the_cursor() {
        let entries: Vec<(String, u8)> = (0..5).map(|i| (format!("b{i}"), i)).collect();
        let (first, more) = page(entries.clone(), None, 2);
        assert_eq!(first.iter().map(|e| e.1).collect::<Vec<_>>(), [0, 1]);
        assert!(more);
        let (last, more) = page(entries, Some("b2"), 5);
        assert_eq!(last.iter().map(|e| e.1).collect::<Vec<_>>(), [3, 4]);
        assert!(!more);
    }
}
