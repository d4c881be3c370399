//! The job: what a producer asks for, and the envelope that carries it on the queue.
//!
//! A job is one chat-completion request (the OpenAI chat-completions body, kept whole so
//! fields Sluice does not know travel to the provider untouched) plus the metadata Sluice
//! needs to schedule and bill it: id, tenant, tags, urgency, deadline, optional `custom_id`.
//!
//! The [`Envelope`] is the documented JSON that travels on the queue (see
//! `docs/envelope.md`); any language can publish one straight onto the exchange.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// How soon someone needs the answer. Each urgency has its own queue and worker pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Seconds: someone is waiting.
    Realtime,
    /// Minutes.
    Standard,
    /// Hours: may use a provider's batch tier.
    Batch,
}

impl Urgency {
    pub const ALL: [Urgency; 3] = [Urgency::Realtime, Urgency::Standard, Urgency::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Realtime => "realtime",
            Urgency::Standard => "standard",
            Urgency::Batch => "batch",
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Urgency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "realtime" => Ok(Urgency::Realtime),
            "standard" => Ok(Urgency::Standard),
            "batch" => Ok(Urgency::Batch),
            other => Err(format!(
                "unknown urgency \"{other}\" (expected realtime, standard or batch)"
            )),
        }
    }
}

/// Where a job is in its life. `Succeeded`, `Failed` and `Cancelled` are terminal: a job in
/// one of them is never called again, whatever the queue redelivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// Succeeded, failed or cancelled: never called again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(JobStatus::Queued),
            "running" => Ok(JobStatus::Running),
            "succeeded" => Ok(JobStatus::Succeeded),
            "failed" => Ok(JobStatus::Failed),
            "cancelled" => Ok(JobStatus::Cancelled),
            other => Err(format!("unknown job status \"{other}\"")),
        }
    }
}

/// Who a job is for, so every cost can be attributed. All optional; any other key is refused,
/// since a misspelt tag would otherwise lose the attribution without a word.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

/// An OpenAI chat-completions request body.
///
/// Only `model` and `messages` are interpreted; every other field is kept in `extra` and sent
/// to the provider as it came, so a new OpenAI parameter needs no Sluice release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request of one user message and no other parameters.
    pub fn single_user_message(model: impl Into<String>, content: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            messages: vec![serde_json::json!({ "role": "user", "content": content.into() })],
            extra: Map::new(),
        }
    }

    /// Checks what the provider would otherwise reject late, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.model.trim().is_empty() {
            return Err(FieldError::new("model", "must not be empty"));
        }
        if self.messages.is_empty() {
            return Err(FieldError::new(
                "messages",
                "must hold at least one message",
            ));
        }
        for (i, message) in self.messages.iter().enumerate() {
            let Some(object) = message.as_object() else {
                return Err(FieldError::new(
                    format!("messages[{i}]"),
                    "must be an object with a \"role\"",
                ));
            };
            let role = object.get("role").and_then(Value::as_str);
            match role {
                Some("system" | "developer" | "user" | "assistant" | "tool" | "function") => {}
                Some(other) => {
                    return Err(FieldError::new(
                        format!("messages[{i}].role"),
                        format!("unknown role \"{other}\""),
                    ))
                }
                None => return Err(FieldError::new(format!("messages[{i}].role"), "is missing")),
            }
            // Only an assistant turn may go without content, when it says something else.
            let said = |field: &str| object.get(field).is_some_and(|v| !v.is_null());
            let answered_otherwise = role == Some("assistant")
                && ["tool_calls", "function_call", "audio", "refusal"]
                    .iter()
                    .any(|field| said(field));
            if !said("content") && !answered_otherwise {
                return Err(FieldError::new(
                    format!("messages[{i}].content"),
                    "is missing",
                ));
            }
        }
        for (name, value) in &self.extra {
            if let Some(expected) = param_type_problem(name, value) {
                return Err(FieldError::new(name.clone(), expected));
            }
        }
        Ok(())
    }

    /// The `max_tokens` (or `max_completion_tokens`) the client asked for, if any.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.extra
            .get("max_completion_tokens")
            .or_else(|| self.extra.get("max_tokens"))
            .and_then(Value::as_u64)
    }
}

/// What is wrong with the value of a standard chat-completions parameter whose JSON type is
/// fixed (`temperature` a number, `max_tokens` a whole number, `stream` true or false, …), or
/// `None` when it is right, null (OpenAI's "not given") or not such a parameter. Checked when
/// a job is submitted, so a wrong type is a 400 naming the field instead of a job that fails
/// at the provider; the adapters rely on it when they read the parameters.
pub fn param_type_problem(name: &str, value: &Value) -> Option<&'static str> {
    if value.is_null() {
        return None;
    }
    let (right, expected) = match name {
        "temperature" | "top_p" | "frequency_penalty" | "presence_penalty" => {
            (value.is_number(), "must be a number")
        }
        "max_tokens" | "max_completion_tokens" | "top_k" | "top_logprobs" => {
            (value.is_u64(), "must be a non-negative integer")
        }
        "n" => (
            value.as_u64().is_some_and(|n| n >= 1),
            "must be an integer of at least 1",
        ),
        "seed" => (value.is_i64() || value.is_u64(), "must be an integer"),
        "stream" | "parallel_tool_calls" | "logprobs" | "store" => {
            (value.is_boolean(), "must be true or false")
        }
        "stop" => (
            value.is_string()
                || value
                    .as_array()
                    .is_some_and(|items| items.iter().all(Value::is_string)),
            "must be a string or strings",
        ),
        _ => return None,
    };
    (!right).then_some(expected)
}

/// A problem with one field of a request, named by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error seen from one level up (`request` + `messages[0]` → `request.messages[0]`;
    /// an error about the whole value is then about `parent`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Deserialises `value`, naming the field a type error is in (`request.messages[0]`; empty
/// when the value as a whole is wrong).
pub fn from_value_naming_field<T: serde::de::DeserializeOwned>(
    value: Value,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, e.into_inner().to_string())
    })
}

/// What a producer submits: everything about a job except what Sluice assigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(default = "default_urgency")]
    pub urgency: Urgency,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    pub request: ChatRequest,
}

fn default_urgency() -> Urgency {
    Urgency::Standard
}

impl JobSpec {
    /// A job with no tags, `custom_id` or deadline.
    pub fn new(urgency: Urgency, request: ChatRequest) -> Self {
        JobSpec {
            urgency,
            tags: Tags::default(),
            custom_id: None,
            deadline: None,
            request,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(custom_id) = &self.custom_id {
            if custom_id.is_empty() || custom_id.len() > 256 {
                return Err(FieldError::new(
                    "custom_id",
                    "must be 1 to 256 characters long",
                ));
            }
        }
        self.request.validate().map_err(|e| e.within("request"))
    }
}

/// The version of the envelope format this build writes and understands.
pub const ENVELOPE_VERSION: u32 = 1;

/// Largest request of one job, serialised. Providers reject far smaller prompts anyway; this
/// keeps one job from filling the queue's memory.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Largest envelope a worker takes off the queue: the largest request, and room for the
/// job's other fields.
pub const MAX_ENVELOPE_BYTES: usize = MAX_REQUEST_BYTES + (64 << 10);

/// The message on the queue: a job with its id and tenant. Documented in `docs/envelope.md`.
///
/// The envelope is self-sufficient: a worker that finds no row for `id` in the store (a job
/// published straight onto the exchange) records the job from the envelope and runs it.
///
/// Read by hand (`EnvelopeHead`) rather than with `#[serde(flatten)]`, which would let an
/// unknown field (a misspelt `"urgancy"`) pass in silence: the envelope's own fields are
/// taken first, and every other one is the job's, whose `deny_unknown_fields` names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    #[serde(default = "envelope_version")]
    pub version: u32,
    pub id: Uuid,
    pub tenant: String,
    /// The reply inbox of the API process waiting on this job (a streamed answer), if any:
    /// see `sluice::queue::replies`. Meaningless to anyone but that process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// True on a message Sluice published for a job it had recorded first: a worker that
    /// finds no row for it must not record it from the message (the job was refused, see
    /// `sluice::store::Orphan`). A foreign producer leaves it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
    /// The W3C trace context (`traceparent`) of the span that submitted the job, so the
    /// worker's spans join the submitter's trace; set by Sluice only while it exports traces.
    /// Travels in the message on both queue backends (and so through the delay ladder); a
    /// malformed one is ignored, as W3C says, never a reason to refuse the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub spec: JobSpec,
}

fn envelope_version() -> u32 {
    ENVELOPE_VERSION
}

/// The fields of an [`Envelope`] that are not the job's; `job` holds all the others.
#[derive(Deserialize)]
struct EnvelopeHead {
    #[serde(default = "envelope_version")]
    version: u32,
    id: Uuid,
    tenant: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    recorded: bool,
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(flatten)]
    job: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let head = EnvelopeHead::deserialize(deserializer)?;
        let spec = from_value_naming_field(Value::Object(head.job)).map_err(|e| {
            serde::de::Error::custom(if e.field.is_empty() {
                e.message
            } else {
                e.to_string()
            })
        })?;
        Ok(Envelope {
            version: head.version,
            id: head.id,
            tenant: head.tenant,
            reply_to: head.reply_to,
            recorded: head.recorded,
            traceparent: head.traceparent,
            spec,
        })
    }
}

impl Envelope {
    pub fn new(tenant: impl Into<String>, spec: JobSpec) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            id: Uuid::now_v7(),
            tenant: tenant.into(),
            reply_to: None,
            recorded: false,
            traceparent: None,
            spec,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// Parses a message taken off the queue of `urgency`, explaining what is wrong with it,
    /// naming the field, when it is not an envelope a worker may run: too large, not JSON, an
    /// unknown or bad field, another version, or an `urgency` other than its queue's (the
    /// routing key it was published with).
    pub fn from_queue(bytes: &[u8], urgency: Urgency) -> Result<Self, String> {
        let envelope = Envelope::from_bytes(bytes)?;
        if envelope.spec.urgency != urgency {
            return Err(format!(
                "urgency: \"{}\" differs from the routing key \"{urgency}\" the envelope was \
                 published with; publish it with routing key \"{}\"",
                envelope.spec.urgency, envelope.spec.urgency
            ));
        }
        Ok(envelope)
    }

    /// Parses a queue message, explaining what is wrong with it when it is not an envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(format!(
                "request: the envelope is {} bytes; the limit is {MAX_ENVELOPE_BYTES} bytes \
                 (a request of at most {MAX_REQUEST_BYTES} bytes and the job's other fields)",
                bytes.len()
            ));
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Sluice job envelope: {e}"))?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!(
                "envelope version {} is not supported (this build reads version {ENVELOPE_VERSION})",
                envelope.version
            ));
        }
        envelope.spec.validate().map_err(|e| e.to_string())?;
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(body: Value) -> JobSpec {
        serde_json::from_value(json!({ "request": body })).unwrap()
    }

    #[test]
    fn unknown_request_fields_survive_a_round_trip() {
        let s = spec(json!({
            "model": "fast",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2,
            "some_future_parameter": {"nested": [1, 2]}
        }));
        let envelope = Envelope::new("acme", s);
        let back = Envelope::from_bytes(&envelope.to_bytes()).unwrap();
        assert_eq!(
            back.spec.request.extra["some_future_parameter"],
            json!({"nested": [1, 2]})
        );
        assert_eq!(back, envelope);
    }

    #[test]
    fn validation_names_the_offending_field() {
        let s = spec(json!({"model": "fast", "messages": [{"content": "hi"}]}));
        assert_eq!(s.validate().unwrap_err().field, "request.messages[0].role");
        let s = spec(json!({"model": "fast", "messages": []}));
        assert_eq!(s.validate().unwrap_err().field, "request.messages");
    }

    /// A standard parameter of the wrong type, or a message with nothing in it, is refused
    /// at submission, naming the field; null is OpenAI's "not given", and an assistant turn
    /// may carry tool calls instead of content.
    #[test]
    fn parameter_types_and_empty_messages_are_refused_at_submission() {
        let with = |extra: Value| {
            let mut body =
                json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            spec(body).validate()
        };
        for (extra, field, expected) in [
            (
                json!({"temperature": "hot"}),
                "request.temperature",
                "must be a number",
            ),
            (
                json!({"max_tokens": -5}),
                "request.max_tokens",
                "must be a non-negative integer",
            ),
            (
                json!({"n": 0}),
                "request.n",
                "must be an integer of at least 1",
            ),
            (
                json!({"stream": "yes"}),
                "request.stream",
                "must be true or false",
            ),
            (
                json!({"stop": ["a", 1]}),
                "request.stop",
                "must be a string or strings",
            ),
            (json!({"seed": 1.5}), "request.seed", "must be an integer"),
        ] {
            let e = with(extra.clone()).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                (field, expected),
                "{extra}"
            );
        }
        for fine in [
            json!({"temperature": 0, "top_p": 0.5, "max_tokens": 10, "n": 1, "stream": true}),
            json!({"stop": "END", "seed": -3, "temperature": null}),
            json!({"some_future_parameter": "anything"}),
        ] {
            assert!(with(fine.clone()).is_ok(), "{fine}");
        }

        let no_content = spec(json!({"model": "fast", "messages": [{"role": "user"}]}));
        assert_eq!(
            no_content.validate().unwrap_err().field,
            "request.messages[0].content"
        );
        let calling = spec(json!({"model": "fast", "messages": [
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "now", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "noon"},
        ]}));
        assert!(calling.validate().is_ok());
    }

    #[test]
    fn an_unknown_tag_is_refused_by_name() {
        let e = serde_json::from_value::<JobSpec>(json!({
            "request": {"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
            "tags": {"colour": "blue"}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }

    /// What `#[serde(flatten)]` let through: a misspelt field, a second-class urgency, an
    /// envelope over the size limit. Each is refused naming the field.
    #[test]
    fn a_bad_envelope_is_refused_naming_the_field() {
        let base = json!({"id": Uuid::now_v7(), "tenant": "acme", "urgency": "batch",
            "request": {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}});
        let with = |field: &str, value: Value| {
            let mut envelope = base.clone();
            envelope[field] = value;
            serde_json::to_vec(&envelope).unwrap()
        };
        let fine = Envelope::from_queue(&serde_json::to_vec(&base).unwrap(), Urgency::Batch);
        assert_eq!(fine.unwrap().spec.urgency, Urgency::Batch);

        let typo = Envelope::from_bytes(&with("urgancy", json!("realtime"))).unwrap_err();
        assert!(typo.contains("unknown field `urgancy`"), "{typo}");
        let tag = Envelope::from_bytes(&with("tags", json!({"tema": "x"}))).unwrap_err();
        assert!(tag.contains("tags.tema: unknown field `tema`"), "{tag}");
        let other = Envelope::from_queue(&serde_json::to_vec(&base).unwrap(), Urgency::Realtime)
            .unwrap_err();
        assert!(
            other.starts_with("urgency: \"batch\" differs from the routing key \"realtime\""),
            "{other}"
        );
        let mut big = base.clone();
        big["request"]["messages"][0]["content"] = json!("x".repeat(2 << 20));
        let big = Envelope::from_bytes(&serde_json::to_vec(&big).unwrap()).unwrap_err();
        assert!(
            big.starts_with("request: the envelope is") && big.contains("the limit is"),
            "{big}"
        );
    }

    /// The trace context rides along when set, and is left out of the JSON when not, so an
    /// envelope of a process exporting no traces is what it always was.
    #[test]
    fn a_traceparent_travels_only_when_set() {
        let mut envelope = Envelope::new(
            "t",
            spec(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
        );
        let plain: Value = serde_json::from_slice(&envelope.to_bytes()).unwrap();
        assert!(plain.get("traceparent").is_none(), "{plain}");
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        envelope.traceparent = Some(traceparent.into());
        let read = Envelope::from_bytes(&envelope.to_bytes()).unwrap();
        assert_eq!(read.traceparent.as_deref(), Some(traceparent));
        assert_eq!(read, envelope);
    }

    #[test]
    fn garbage_is_not_an_envelope() {
        let err = Envelope::from_bytes(b"not json").unwrap_err();
        assert!(err.contains("not a Sluice job envelope"), "{err}");
    }

    #[test]
    fn uuid_ids_are_time_ordered_v7() {
        let a = Envelope::new(
            "t",
            spec(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
        );
        assert_eq!(a.id.get_version_num(), 7);
    }
}
