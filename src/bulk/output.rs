//! A finished job of a bulk as one line of OpenAI's batch output format
//! (`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`), so
//! code that reads OpenAI batch results reads Sluice's unchanged.
//!
//! - succeeded: `response` with status 200 and the `chat.completion` body, `error` null;
//! - failed with an HTTP answer from the provider (a 400, or a 429/5xx after the last retry):
//!   `response` with that status and an OpenAI-style error body, `error` null, as OpenAI does;
//! - refused by Sluice itself (a spent budget, a request over every key's limit, an unknown
//!   model, a passed deadline): `response` with the status `/v1/chat/completions` answers for
//!   it (402, 400, 404, 504) and the same error body;
//! - failed without an answer (timeout, connection): `response` null, `error: {code, message}`;
//! - cancelled before it ran: `error: {code: "batch_cancelled"}` (OpenAI's name in a batch
//!   file for a request the batch never ran).
//!
//! Error bodies take their `type` and `code` from the one mapping of a failure
//! ([`JobFailure::answer`]). `id` and `request_id` are the Sluice job id (`sluice get ID`
//! shows its attempts and cost).

use crate::failure::JobFailure;
use crate::job::JobStatus;
use crate::store::BulkResultRow;
use serde_json::{json, Value};

/// The output line of a finished job (without its newline).
pub fn output_line(row: &BulkResultRow) -> Vec<u8> {
    let response = |status: u16, body: Value| json!({ "status_code": status, "request_id": row.id, "body": body });
    let message = row.error.clone().unwrap_or_default();
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
        _ => {
            let failure = row.error_kind.unwrap_or(JobFailure::Unrecognised);
            let answer = failure.answer();
            // The provider's status when its answer ended the job (not an earlier attempt's,
            // when Sluice refused the job after it); Sluice's own when Sluice refused it.
            let status = match failure {
                JobFailure::Provider(_) => row.http_status.filter(|status| *status != 200),
                refusal if refusal.is_refusal() => Some(answer.status),
                _ => None,
            };
            let body = json!({ "error": {
                "message": message,
                "type": answer.error_type,
                "param": Value::Null,
                "code": answer.code,
            } });
            match status {
                Some(status) => (response(status, body), Value::Null),
                None => (
                    Value::Null,
                    json!({ "code": answer.code, "message": message }),
                ),
            }
        }
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
    use crate::providers::ErrorKind;
    use uuid::Uuid;

    fn row(status: JobStatus, http_status: Option<u16>) -> BulkResultRow {
        BulkResultRow {
            id: Uuid::now_v7(),
            custom_id: "req-1".into(),
            line: 1,
            status,
            response: Some(r#"{"object":"chat.completion"}"#.into()),
            error_kind: Some(ErrorKind::BadRequest.into()),
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
        assert_eq!(
            http["response"]["body"]["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(http["response"]["body"]["error"]["code"], "bad_request");
        assert!(http["error"].is_null());

        let mut timeout = row(JobStatus::Failed, None);
        timeout.error_kind = Some(ErrorKind::Timeout.into());
        let timeout = parse(&timeout);
        assert!(timeout["response"].is_null());
        assert_eq!(timeout["error"]["code"], "timeout");

        // Refused by a budget after an attempt that got a 429: Sluice's 402, not the 429.
        let mut refused = row(JobStatus::Failed, Some(429));
        refused.error_kind = Some(JobFailure::BudgetExceeded);
        let refused = parse(&refused);
        assert_eq!(refused["response"]["status_code"], 402);
        assert_eq!(
            refused["response"]["body"]["error"]["code"],
            "budget_exceeded"
        );
        assert!(refused["error"].is_null());

        let cancelled = parse(&row(JobStatus::Cancelled, None));
        assert_eq!(cancelled["error"]["code"], "batch_cancelled");
    }
}
