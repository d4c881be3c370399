//! Fault directives: how one request asks the simulator to misbehave.
//!
//! Tests and the demo need to break *one* job, not the whole simulator, so a fault travels
//! with the request itself: a `[sim …]` directive in any message's text, or an `x-sim-fault`
//! header for clients that cannot touch the prompt. The syntax is documented in the
//! [module docs of `sim`](super). This module only parses directives and decides, for the
//! Nth call of a request, which fault (if any) applies; carrying it out is `call`'s
//! job, and rendering it in a provider's words is the job of that provider's module.

use serde_json::Value;
use std::time::Duration;

/// One thing a call can be made to do instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and the provider's error body.
    Status(u16),
    /// 429 for spent credit or a spend cap: not worth retrying.
    Quota,
    /// Never answer (until the client gives up or the simulator shuts down).
    Timeout,
    /// Close the connection half-way through the body: a stream without its terminator, a
    /// truncated JSON body otherwise.
    Cut,
    /// A stream that starts well and then carries the provider's in-stream error; answered
    /// as the provider's overload error when the request does not stream.
    Midstream,
    /// The body stops half-way with the connection kept open: a stream that stalls after
    /// half its content, a JSON body that stops half-way.
    Stall,
}

impl Fault {
    /// The HTTP status of a non-streamed answer to this fault, for a family whose overload
    /// status is `overloaded` (503, or Anthropic's 529). Each family words the body itself.
    pub fn status(self, overloaded: u16) -> u16 {
        match self {
            Fault::Status(status) => status,
            Fault::Quota => 429,
            // A non-streamed request cannot break half-way: it gets the overload error instead.
            Fault::Midstream => overloaded,
            // Handled before an error is built; an error is the safe answer should that change.
            Fault::Timeout | Fault::Cut | Fault::Stall => 504,
        }
    }

    /// A client error the request itself causes answers every call, as a real provider
    /// would: retrying a malformed request does not fix it.
    fn is_permanent(self) -> bool {
        match self {
            Fault::Status(status) => {
                (400..500).contains(&status) && !matches!(status, 408 | 409 | 429)
            }
            Fault::Quota => true,
            Fault::Timeout | Fault::Cut | Fault::Midstream | Fault::Stall => false,
        }
    }
}

/// One step of a `fail=` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    fault: Fault,
    /// From this call on, every call gets this fault (`*`, or a permanent client error).
    sticky: bool,
}

/// The `fail=` list of a request: which fault its 1st, 2nd, … call gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailPlan {
    steps: Vec<Step>,
}

impl FailPlan {
    /// Parses `429,500`, `500*`, `timeout`, `quota`, `cut`, `midstream`, `stall`, `400`.
    pub fn parse(list: &str) -> Result<Self, DirectiveError> {
        let mut steps = Vec::new();
        let items: Vec<&str> = list.split(',').map(str::trim).collect();
        for (i, item) in items.iter().enumerate() {
            let (name, star) = match item.strip_suffix('*') {
                Some(name) => (name, true),
                None => (*item, false),
            };
            if star && i + 1 != items.len() {
                return Err(DirectiveError(format!(
                    "fail={list}: only the last step may repeat with '*'"
                )));
            }
            let fault = match name {
                "timeout" => Fault::Timeout,
                "quota" => Fault::Quota,
                "cut" => Fault::Cut,
                "midstream" => Fault::Midstream,
                "stall" => Fault::Stall,
                digits => match digits.parse::<u16>() {
                    Ok(status) if (400..=599).contains(&status) => Fault::Status(status),
                    _ => {
                        return Err(DirectiveError(format!(
                            "fail={list}: \"{item}\" is not a fault (expected an HTTP status \
                             400-599, timeout, quota, cut, midstream or stall, optionally followed by '*')"
                        )))
                    }
                },
            };
            steps.push(Step {
                fault,
                sticky: star || fault.is_permanent(),
            });
        }
        Ok(FailPlan { steps })
    }

    /// The fault for the `call`-th call (1-based) of a request, or `None` to answer normally.
    pub fn fault_for_call(&self, call: u64) -> Option<Fault> {
        for (i, step) in self.steps.iter().enumerate() {
            let position = i as u64 + 1;
            if call == position || (step.sticky && call > position) {
                return Some(step.fault);
            }
        }
        None
    }
}

/// A directive the simulator could not understand. Answered as a 400 naming the problem,
/// so a typo in a test shows up instead of silently running without the fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulator directive: {0}")]
pub struct DirectiveError(pub String);

/// Everything the directives of one request ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    pub fail: Option<FailPlan>,
    pub latency: Option<Duration>,
    /// How long the first token takes: the first content chunk of a stream, the whole answer
    /// otherwise.
    pub ttft: Option<Duration>,
    /// Between one content chunk of a stream and the next (a provider's inter-token latency);
    /// a plain answer is not affected.
    pub itl: Option<Duration>,
    /// Prompt tokens to report as served from cache (capped at the prompt's size).
    pub cached: Option<u64>,
    /// Answer with a call of this offered tool instead of text.
    pub tool: Option<String>,
    /// What becomes of the request when it is an item of a batch; a realtime call ignores
    /// it, so a job whose batch item failed can still succeed on the realtime tier.
    pub batch: Option<BatchFate>,
}

/// `batch=`: how a batch item fails instead of being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFate {
    /// `batch=error`: a server error, worth retrying.
    Error,
    /// `batch=invalid`: an invalid-request error, not worth retrying as it is.
    Invalid,
    /// `batch=expire`: never runs; expires when the batch ends, even if the batch completes.
    Expire,
}

impl BatchFate {
    fn parse(value: &str) -> Result<Self, DirectiveError> {
        match value {
            "error" => Ok(BatchFate::Error),
            "invalid" => Ok(BatchFate::Invalid),
            "expire" => Ok(BatchFate::Expire),
            other => Err(DirectiveError(format!(
                "batch={other}: expected batch=error, batch=invalid or batch=expire"
            ))),
        }
    }
}

const OPEN: &str = "[sim ";
/// For error messages: what a directive may say.
const KEYS: &str = "fail=, latency=, ttft=, itl=, cached=, tool= or batch=";

fn duration(key: &str, value: &str) -> Result<Duration, DirectiveError> {
    humantime::parse_duration(value)
        .map_err(|e| DirectiveError(format!("{key}={value}: {e} (write e.g. 200ms or 1s)")))
}

impl Directives {
    /// Collects the directives of every piece of text a request carries.
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, DirectiveError> {
        let mut directives = Directives::default();
        for text in texts {
            directives.scan(text)?;
        }
        Ok(directives)
    }

    /// Applies an `x-sim-fault` header: either a bare fail list (`429,500`) or a directive
    /// body (`fail=429 latency=1s`). The header wins over the messages.
    pub fn apply_header(&mut self, value: &str) -> Result<(), DirectiveError> {
        if value.contains('=') {
            self.apply_body(value)
        } else {
            self.fail = Some(FailPlan::parse(value.trim())?);
            Ok(())
        }
    }

    /// Finds every `[sim …]` in `text`.
    fn scan(&mut self, text: &str) -> Result<(), DirectiveError> {
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            let after = &rest[start + OPEN.len()..];
            let Some(end) = after.find(']') else {
                return Err(DirectiveError(format!(
                    "unterminated \"{}\" (missing ']')",
                    snippet(&rest[start..])
                )));
            };
            self.apply_body(&after[..end])?;
            rest = &after[end + 1..];
        }
        Ok(())
    }

    /// Applies `key=value key=value`.
    fn apply_body(&mut self, body: &str) -> Result<(), DirectiveError> {
        let mut any = false;
        for pair in body.split_whitespace() {
            any = true;
            let Some((key, value)) = pair.split_once('=') else {
                return Err(DirectiveError(format!(
                    "\"{pair}\" is not key=value (expected {KEYS})"
                )));
            };
            match key {
                "fail" => self.fail = Some(FailPlan::parse(value)?),
                "latency" => self.latency = Some(duration(key, value)?),
                "ttft" => self.ttft = Some(duration(key, value)?),
                "itl" => self.itl = Some(duration(key, value)?),
                "tool" if !value.is_empty() => self.tool = Some(value.to_string()),
                "batch" => self.batch = Some(BatchFate::parse(value)?),
                "cached" => {
                    let cached = value.parse::<u64>().map_err(|_| {
                        DirectiveError(format!("cached={value}: expected a token count"))
                    })?;
                    self.cached = Some(cached);
                }
                other => {
                    return Err(DirectiveError(format!(
                        "unknown key \"{other}\" in \"{pair}\" (expected {KEYS})"
                    )))
                }
            }
        }
        if !any {
            return Err(DirectiveError("empty [sim ] directive".into()));
        }
        Ok(())
    }
}

/// The text pieces of a `content` that is a string or an array of typed parts (OpenAI's
/// messages and Anthropic's alike): the string, or the `text` of its `text` parts.
pub fn content_texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// `text` without its `[sim …]` directives, so answers do not depend on the faults asked for.
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(']') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn snippet(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(list: &str) -> Vec<Option<Fault>> {
        let plan = FailPlan::parse(list).unwrap();
        (1..=4).map(|call| plan.fault_for_call(call)).collect()
    }

    #[test]
    fn fail_lists_apply_to_the_first_calls_only() {
        use Fault::*;
        assert_eq!(plan("429"), [Some(Status(429)), None, None, None]);
        assert_eq!(
            plan("429,500"),
            [Some(Status(429)), Some(Status(500)), None, None]
        );
        assert_eq!(plan("timeout"), [Some(Timeout), None, None, None]);
    }

    #[test]
    fn star_and_client_errors_repeat_forever() {
        use Fault::*;
        assert_eq!(plan("500*"), [Some(Status(500)); 4]);
        assert_eq!(plan("400"), [Some(Status(400)); 4]);
        assert_eq!(plan("quota"), [Some(Quota); 4]);
        assert_eq!(
            plan("429,503*"),
            [
                Some(Status(429)),
                Some(Status(503)),
                Some(Status(503)),
                Some(Status(503))
            ]
        );
    }

    #[test]
    fn bad_fail_lists_are_explained() {
        let err = FailPlan::parse("429*,500").unwrap_err();
        assert!(err.0.contains("last step"), "{err}");
        let err = FailPlan::parse("200").unwrap_err();
        assert!(err.0.contains("\"200\" is not a fault"), "{err}");
        assert!(FailPlan::parse("").is_err());
    }

    #[test]
    fn directives_are_found_in_any_text() {
        let system = json!("Be brief. [sim latency=200ms]");
        let user = json!([{"type": "text", "text": "Hello [sim fail=429,500 cached=64]"}]);
        let texts = content_texts(Some(&system))
            .into_iter()
            .chain(content_texts(Some(&user)));
        let d = Directives::from_texts(texts).unwrap();
        assert_eq!(d.latency, Some(Duration::from_millis(200)));
        assert_eq!(d.cached, Some(64));
        assert_eq!(d.fail.unwrap().fault_for_call(2), Some(Fault::Status(500)));

        let d = Directives::from_texts([
            "[sim ttft=1s itl=20ms tool=get_weather fail=cut,midstream,stall]",
        ])
        .unwrap();
        assert_eq!(d.ttft, Some(Duration::from_secs(1)));
        assert_eq!(d.itl, Some(Duration::from_millis(20)));
        assert_eq!(d.tool.as_deref(), Some("get_weather"));
        let plan = d.fail.unwrap();
        assert_eq!(plan.fault_for_call(1), Some(Fault::Cut));
        assert_eq!(plan.fault_for_call(2), Some(Fault::Midstream));
        assert_eq!(plan.fault_for_call(3), Some(Fault::Stall));
        assert_eq!(plan.fault_for_call(4), None);
    }

    #[test]
    fn batch_fates_are_read() {
        for (text, fate) in [
            ("[sim batch=error]", BatchFate::Error),
            ("[sim batch=invalid]", BatchFate::Invalid),
            ("[sim batch=expire fail=429]", BatchFate::Expire),
        ] {
            assert_eq!(Directives::from_texts([text]).unwrap().batch, Some(fate));
        }
    }

    #[test]
    fn no_directive_means_nothing_to_do() {
        // "[sim" without a space is ordinary text.
        assert_eq!(
            Directives::from_texts(["[simple] text [sim"]).unwrap(),
            Directives::default()
        );
    }

    #[test]
    fn bad_directives_are_errors() {
        for text in [
            "[sim fail=429",
            "[sim nope=1]",
            "[sim latency=fast]",
            "[sim  ]",
            "[sim fail]",
            "[sim tool=]",
            "[sim ttft=soon]",
            "[sim batch=later]",
        ] {
            assert!(Directives::from_texts([text]).is_err(), "{text}");
        }
    }

    #[test]
    fn header_accepts_a_list_or_a_directive_body() {
        let mut d = Directives::default();
        d.apply_header("429, 500").unwrap();
        assert_eq!(
            d.fail.as_ref().unwrap().fault_for_call(2),
            Some(Fault::Status(500))
        );
        let mut d = Directives::default();
        d.apply_header("fail=timeout latency=5ms").unwrap();
        assert_eq!(d.fail.unwrap().fault_for_call(1), Some(Fault::Timeout));
        assert_eq!(d.latency, Some(Duration::from_millis(5)));
    }

    #[test]
    fn strip_removes_directives() {
        assert_eq!(strip("Hello [sim fail=429] world"), "Hello world");
        assert_eq!(strip("[sim latency=1s]"), "");
        assert_eq!(strip("plain"), "plain");
    }
}
