//! A finished job of a bulk as one line of OpenAI's batch output format
//! (`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`), so
//! code that reads OpenAI batch results reads Sluice's unchanged.
//!
//! - succeeded: `response` with status 200 and the `chat.completion` body, `error` null;
//! - failed with an HTTP answer from the provider (a 400, or a 429/5xx after the last retry):
//!   `response` with that status and an OpenAI-style error body, `error` null, as OpenAI does;
//! - failed without one (timeout, connection): `response` null, `error: {code, message}`;
//! - cancelled before it ran: `error: {code: "batch_cancelled"}`.
//!
//! `id` and `request_id` are the Sluice job id (`sluice get ID` shows its attempts and cost).

use crate::job::JobStatus;
use crate::store::BulkResultRow;
use serde_json::{json, Value};

/// The output line of a finished job (without its newline).
pub fn output_line(row: &BulkResultRow) -> Vec<u8> {
    let response = |status: u16, body: Value| json!({ "status_code": status, "request_id": row.id, "body": body });
    let message = row.error.clone().unwrap_or_default();
    let kind = row.error_kind.clone().unwrap_or_else(|| "error".into());
    let (response, error) = match row.status {
        JobStatus::Succeeded => {
            let body = row
                .response
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            (response(200, body), Value::Null)
        }
        JobStatus::Cancelled => (
            Value::Null,
            json!({ "code": "batch_cancelled", "message": "the job was cancelled before it ran" }),
        ),
        _ => match row.http_status {
            Some(status) if status != 200 => (
                response(
                    status,
                    json!({ "error": { "message": message, "type": kind, "code": Value::Null } }),
                ),
                Value::Null,
            ),
            _ => (Value::Null, json!({ "code": kind, "message": message })),
        },
    };
    let line = json!({
        "id": row.id,
        "custom_id": row.custom_id,
        "response": response,
        "error": error,
    });
    serde_json::to_vec(&line).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn row(status: JobStatus, http_status: Option<u16>) -> BulkResultRow {
        BulkResultRow {
            id: Uuid::now_v7(),
            custom_id: "req-1".into(),
            line: 1,
            status,
            response: Some(r#"{"object":"chat.completion"}"#.into()),
            error_kind: Some("bad_request".into()),
            error: Some("no".into()),
            http_status,
        }
    }

    fn parse(row: &BulkResultRow) -> Value {
        serde_json::from_slice(&output_line(row)).unwrap()
    }

    #[test]
    fn each_outcome_has_openais_shape() {
        let ok = parse(&row(JobStatus::Succeeded, Some(200)));
        assert_eq!(ok["custom_id"], "req-1");
        assert_eq!(ok["response"]["status_code"], 200);
        assert_eq!(ok["response"]["body"]["object"], "chat.completion");
        assert!(ok["error"].is_null());

        let http = parse(&row(JobStatus::Failed, Some(400)));
        assert_eq!(http["response"]["status_code"], 400);
        assert_eq!(http["response"]["body"]["error"]["message"], "no");
        assert!(http["error"].is_null());

        let timeout = parse(&row(JobStatus::Failed, None));
        assert!(timeout["response"].is_null());
        assert_eq!(timeout["error"]["code"], "bad_request");

        let cancelled = parse(&row(JobStatus::Cancelled, None));
        assert_eq!(cancelled["error"]["code"], "batch_cancelled");
    }
}
