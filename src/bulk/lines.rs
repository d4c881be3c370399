//! Reading a JSONL file line by line in bounded memory, and turning one line into a job.
//!
//! [`LineReader`] never holds more than [`super::MAX_LINE_BYTES`] of a line: a longer one is
//! read through and reported as too long, so a file with a 2 GB line (or no newline at all)
//! cannot exhaust memory. It can copy every byte it reads to a spool file, which is how the
//! server keeps an uploaded body for the second pass without holding it.
//!
//! [`parse_line`] accepts the three forms of a line: OpenAI's batch input
//! (`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`), the short form
//! (`{"custom_id", "body"}`), and a bare chat body (`{"model"?, "messages", …}`, with an
//! optional `custom_id` beside them; without one it is `line-N`).

use super::{Defaults, LineError, CHAT_COMPLETIONS_URL};
use crate::job::{from_value_naming_field, ChatRequest, FieldError, JobSpec};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// One line as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without the newline (nor a `\r` before it).
    Text(&'a [u8]),
    /// The line was `len` bytes long, over the limit; `prefix` is its start.
    TooLong { len: u64, prefix: &'a [u8] },
}

/// Reads lines of at most `max` bytes from `R`, optionally copying every byte read to `W`.
pub struct LineReader<R, W> {
    input: R,
    tee: Option<W>,
    max: usize,
    number: u64,
    buf: Vec<u8>,
    bytes: u64,
}

impl<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin> LineReader<R, W> {
    pub fn new(input: R, max: usize, tee: Option<W>) -> Self {
        LineReader {
            input,
            tee,
            max,
            number: 0,
            buf: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next line and its number (1-based), or `None` at the end of the input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len = 0u64;
        let mut any = false;
        loop {
            let available = self.input.fill_buf().await?;
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let content = &available[..newline.unwrap_or(available.len())];
            len += content.len() as u64;
            let room = self.max.saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(&content[..content.len().min(room)]);
            let used = content.len() + usize::from(newline.is_some());
            if let Some(tee) = &mut self.tee {
                tee.write_all(&available[..used]).await?;
            }
            self.input.consume(used);
            self.bytes += used as u64;
            if newline.is_some() {
                break;
            }
        }
        self.number += 1;
        if len > self.max as u64 {
            return Ok(Some((
                self.number,
                Line::TooLong {
                    len,
                    prefix: &self.buf,
                },
            )));
        }
        let mut text = &self.buf[..];
        if let [rest @ .., b'\r'] = text {
            text = rest;
        }
        if self.number == 1 {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        Ok(Some((self.number, Line::Text(text))))
    }

    /// Flushes the copy and hands it back.
    pub async fn finish(self) -> std::io::Result<Option<W>> {
        match self.tee {
            Some(mut tee) => {
                tee.flush().await?;
                Ok(Some(tee))
            }
            None => Ok(None),
        }
    }
}

/// Whether a line holds nothing but white space (such lines are skipped, not errors).
pub fn is_blank(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_whitespace)
}

/// The error for a line over the length limit.
pub fn too_long(line: u64, len: u64) -> LineError {
    LineError {
        line,
        field: String::new(),
        message: format!(
            "the line is {len} bytes; a line may be at most {} bytes (a request at most {} bytes)",
            super::MAX_LINE_BYTES,
            crate::submit::MAX_REQUEST_BYTES
        ),
    }
}

/// Turns one line into a job: its `custom_id` and request from the line, everything else from
/// `defaults`. Only the line's form is checked here; see [`crate::submit::check_spec`] for the
/// rest.
pub fn parse_line(number: u64, text: &[u8], defaults: &Defaults) -> Result<JobSpec, LineError> {
    let error = |field: &str, message: String| LineError {
        line: number,
        field: field.to_string(),
        message,
    };
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        error(
            "",
            format!(
                "not valid JSON at column {}: {}",
                e.column(),
                json_reason(&e)
            ),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(error(
            "",
            "must be a JSON object: a batch request line {\"custom_id\", \"method\", \"url\", \"body\"} or a chat request body".into(),
        ));
    };
    let custom_id = match object.remove("custom_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(error(
                "custom_id",
                format!("must be a string, not {}", kind(&other)),
            ))
        }
    };
    // `body` present: a batch input line (or its short form); otherwise a bare chat body.
    let (mut body, body_path) = match object.remove("body") {
        Some(body) => {
            check_batch_fields(&object).map_err(|e| error(&e.field, e.message))?;
            let Value::Object(body) = body else {
                return Err(error(
                    "body",
                    format!("must be a chat request object, not {}", kind(&body)),
                ));
            };
            (body, "body")
        }
        None => (object, ""),
    };
    if !body.contains_key("model") {
        match &defaults.model {
            Some(model) => {
                body.insert("model".into(), Value::String(model.clone()));
            }
            None => {
                return Err(error(
                    &join(body_path, "model"),
                    "is missing; put \"model\" in the request or give a default with --model"
                        .into(),
                ))
            }
        }
    }
    if !body.contains_key("messages") {
        return Err(error(
            &join(body_path, "messages"),
            "is missing; every request needs a \"messages\" array".into(),
        ));
    }
    let request: ChatRequest = from_value_naming_field(Value::Object(body))
        .map_err(|e| error(&join(body_path, &e.field), e.message))?;
    Ok(JobSpec {
        urgency: defaults.urgency,
        tags: defaults.tags.clone(),
        custom_id: Some(custom_id.unwrap_or_else(|| format!("line-{number}"))),
        deadline: defaults.deadline,
        request,
    })
}

/// Names a [`crate::submit::check_spec`] error as the line spells it: the job's `request` is
/// the line's `body` (or the line itself, for a bare body).
pub fn locate(number: u64, text: &[u8], e: FieldError) -> LineError {
    let body_path = if has_body(text) { "body" } else { "" };
    let field = match e.field.strip_prefix("request") {
        Some(rest) => join(body_path, rest.trim_start_matches('.')),
        None => e.field,
    };
    LineError {
        line: number,
        field,
        message: e.message,
    }
}

/// Whether a line that parsed is in the batch form (has a `body`). Cheap: only the error path
/// asks.
fn has_body(text: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(text)
        .map(|o| o.contains_key("body"))
        .unwrap_or(false)
}

fn check_batch_fields(line: &Map<String, Value>) -> Result<(), FieldError> {
    for (key, value) in line {
        match (key.as_str(), value) {
            ("method", Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
            ("method", other) => {
                return Err(FieldError::new(
                    "method",
                    format!("must be \"POST\", not {other}"),
                ))
            }
            ("url", Value::String(u)) if u == CHAT_COMPLETIONS_URL => {}
            ("url", other) => {
                return Err(FieldError::new(
                    "url",
                    format!("must be \"{CHAT_COMPLETIONS_URL}\", not {other}"),
                ))
            }
            (other, _) => {
                return Err(FieldError::new(
                    other,
                    "is not a field of a batch request line (custom_id, method, url, body)",
                ))
            }
        }
    }
    Ok(())
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (false, true) => parent.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its " at line 1 column N" (the column is reported apart).
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Urgency;

    fn defaults() -> Defaults {
        Defaults {
            model: Some("fast".into()),
            ..Defaults::default()
        }
    }

    fn parse(text: &str) -> Result<JobSpec, LineError> {
        parse_line(7, text.as_bytes(), &defaults())
    }

    #[test]
    fn the_three_forms_parse() {
        let full = parse(r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"smart","messages":[{"role":"user","content":"hi"}],"temperature":0}}"#).unwrap();
        assert_eq!(full.custom_id.as_deref(), Some("a"));
        assert_eq!(full.request.model, "smart");
        assert_eq!(full.request.extra["temperature"], 0);
        assert_eq!(full.urgency, Urgency::Batch);

        let short =
            parse(r#"{"custom_id":"b","body":{"messages":[{"role":"user","content":"hi"}]}}"#)
                .unwrap();
        assert_eq!(short.custom_id.as_deref(), Some("b"));
        assert_eq!(short.request.model, "fast", "the default model");

        let bare = parse(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(bare.custom_id.as_deref(), Some("line-7"));
        let bare_with_id =
            parse(r#"{"custom_id":"c","model":"m","messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!(bare_with_id.custom_id.as_deref(), Some("c"));
        assert!(
            !bare_with_id.request.extra.contains_key("custom_id"),
            "custom_id is not sent to the provider"
        );
    }

    #[test]
    fn bad_lines_name_the_field_and_reason() {
        let cases = [
            (
                r#"{"custom_id":"a","body":{"messages":[{"role":"user""#,
                "",
                "not valid JSON at column",
            ),
            ("[1,2]", "", "must be a JSON object"),
            (
                r#"{"custom_id":"a","body":{"model":"x"}}"#,
                "body.messages",
                "is missing",
            ),
            (r#"{"model":"x"}"#, "messages", "is missing"),
            (
                r#"{"custom_id":"a","method":"GET","body":{"messages":[]}}"#,
                "method",
                "must be \"POST\"",
            ),
            (
                r#"{"custom_id":"a","url":"/v1/embeddings","body":{"messages":[]}}"#,
                "url",
                "/v1/chat/completions",
            ),
            (
                r#"{"custom_id":1,"body":{"messages":[]}}"#,
                "custom_id",
                "must be a string",
            ),
            (
                r#"{"custom_id":"a","body":"hi"}"#,
                "body",
                "chat request object",
            ),
            (
                r#"{"custom_id":"a","extra":1,"body":{"messages":[]}}"#,
                "extra",
                "not a field",
            ),
            (
                r#"{"custom_id":"a","body":{"messages":"hi"}}"#,
                "body.messages",
                "invalid type",
            ),
        ];
        for (text, field, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, 7);
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        let no_default = parse_line(1, br#"{"messages":[]}"#, &Defaults::default()).unwrap_err();
        assert_eq!(no_default.field, "model");
        assert!(no_default.message.contains("--model"), "{no_default}");
    }

    #[test]
    fn check_errors_are_located_in_the_line() {
        let e = FieldError::new("request.messages[0].role", "unknown role");
        assert_eq!(
            locate(3, br#"{"body":{}}"#, e.clone()).field,
            "body.messages[0].role"
        );
        assert_eq!(
            locate(3, br#"{"messages":[]}"#, e).field,
            "messages[0].role"
        );
        let whole = FieldError::new("request", "is 2000000 bytes");
        assert_eq!(locate(3, br#"{"body":{}}"#, whole).field, "body");
    }

    #[tokio::test]
    async fn lines_are_capped_and_copied() {
        let long = "x".repeat(100);
        let input = format!("one\r\n{long}\n\nlast");
        let mut copy = Vec::new();
        let mut reader = LineReader::new(input.as_bytes(), 10, Some(&mut copy));
        let mut seen = Vec::new();
        while let Some((n, line)) = reader.next_line().await.unwrap() {
            seen.push(match line {
                Line::Text(t) => (n, String::from_utf8(t.to_vec()).unwrap()),
                Line::TooLong { len, prefix } => (n, format!("too long {len} {}", prefix.len())),
            });
        }
        reader.finish().await.unwrap();
        assert_eq!(
            seen,
            vec![
                (1, "one".to_string()),
                (2, "too long 100 10".to_string()),
                (3, String::new()),
                (4, "last".to_string())
            ]
        );
        assert_eq!(copy, input.as_bytes(), "the copy is byte for byte");
    }
}
