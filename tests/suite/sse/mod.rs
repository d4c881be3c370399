//! Reading server-sent events in the simulator's tests: the whole body, split into events.

#![allow(dead_code)]

use serde_json::Value;

/// One event: its `event:` name (if any) and its `data:` text.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Reads a `text/event-stream` response to its end and splits it into events.
pub async fn events(response: reqwest::Response) -> Vec<Event> {
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let body = response.text().await.expect("the stream ends cleanly");
    parse(&body)
}

pub fn parse(body: &str) -> Vec<Event> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_string());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push(value);
                }
            }
            Event {
                name,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// Reads a response whose connection the simulator cuts: the body must fail, after some
/// bytes arrived. Returns what arrived.
pub async fn cut_body(mut response: reqwest::Response) -> String {
    let mut received = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!(
                "the body ended cleanly; expected a cut connection after: {}",
                String::from_utf8_lossy(&received)
            ),
            Err(_) => break,
        }
    }
    assert!(!received.is_empty(), "nothing arrived before the cut");
    String::from_utf8_lossy(&received).into_owned()
}
