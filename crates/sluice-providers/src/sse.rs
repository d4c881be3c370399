//! A server-sent events parser: bytes in, whole events out, however the bytes were split.
//!
//! All three providers stream over SSE (`text/event-stream`). The format is small, but the
//! details that break naive parsers are exactly the ones a network produces: a line split
//! across two reads, a `\r\n` split between its `\r` and its `\n`, a multi-byte character
//! split in the middle, comments used as keep-alives. This parser follows the WHATWG
//! definition (lines end in `\r\n`, `\n` or `\r`; `data` lines accumulate with `\n`; a blank
//! line dispatches; an event cut off by the end of the stream is not dispatched) and is about
//! eighty lines, so it is written here rather than taken as one more dependency.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` name, when the server gave one (Anthropic does; OpenAI and Gemini do not).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental parser state. Feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    /// The last byte seen was a `\r`, so a `\n` at the start of the next chunk belongs to it.
    after_cr: bool,
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// Parses the next chunk of the body, returning the events it completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        while let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.pending.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.pending);
            self.line(&line, &mut events);
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.pending.extend_from_slice(bytes);
        events
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        let mut line = String::from_utf8_lossy(line);
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_string().into();
            }
        }
        if line.is_empty() {
            if self.has_data {
                events.push(Event {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // a comment, often a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` matter to browsers reconnecting, not to one API call.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::new();
        chunks.iter().flat_map(|c| parser.feed(c)).collect()
    }

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn events_with_and_without_names() {
        let body = b"event: message_start\ndata: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            all(&[body]),
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "{\"b\":2}"),
                ev(None, "[DONE]")
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let body = "event: a\r\ndata: first ünïcødé line\r\ndata:second\r\n\r\n: keep-alive\n\ndata: x\r\rdata: y\n\n".as_bytes();
        let whole = all(&[body]);
        assert_eq!(
            whole,
            vec![
                ev(Some("a"), "first ünïcødé line\nsecond"),
                ev(None, "x"),
                ev(None, "y")
            ]
        );
        for split in 0..body.len() {
            assert_eq!(
                all(&[&body[..split], &body[split..]]),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn an_event_cut_off_by_the_end_is_not_dispatched() {
        assert_eq!(all(&[b"data: {\"partial\": tr"]), vec![]);
        assert_eq!(all(&[b"data: done\n"]), vec![]);
    }

    #[test]
    fn field_details() {
        // No space after the colon, a field without a colon, a BOM, unknown fields, empty data.
        let body = "\u{feff}data:tight\nid: 7\nretry: 10\n\ndata\n\nevent: only-name\n\n";
        assert_eq!(
            all(&[body.as_bytes()]),
            vec![ev(None, "tight"), ev(None, "")]
        );
    }
}
