//! Per-deployment request shaping: a system-prompt template and parameter overrides.
//!
//! Models differ: one wants a firmer system prompt, another a lower temperature, a third
//! rejects a parameter the application always sends. A deployment's `overrides` let prompt
//! engineers tune each model in `sluice.toml` without touching application code:
//!
//! ```toml
//! [deployments.claude-sonnet.overrides]
//! system_prompt = "You answer in British English.\n\n{system}"   # {system}: the original
//! set = { temperature = 0.3 }                                      # always sent as given
//! max = { max_tokens = 2048, temperature = 1.0 }                   # upper bounds
//! drop = ["seed", "logit_bias"]                                    # never sent
//! ```
//!
//! They apply to the request sent to that deployment only, after the router chose it (a
//! fallback deployment gets its own shaping, not the primary's), in this order: drop, set,
//! max, then the system prompt. The job's stored request stays what the client sent.

use crate::job::ChatRequest;
use crate::problem::Problem;
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The placeholder a `system_prompt` template uses for the request's own system prompt.
pub const ORIGINAL_SYSTEM: &str = "{system}";

/// How one deployment reshapes the requests it is sent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Replaces the request's system prompt. `{system}` stands for the original: every
    /// system and developer message's text, joined by a blank line (empty when there is none).
    /// Without `{system}`, the original is replaced; with it first or last, the template
    /// appends or prepends.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Parameters set on every request, whatever the request said.
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Upper bounds of numeric parameters: a larger value is lowered to the bound; an absent
    /// parameter stays absent.
    #[serde(default)]
    pub max: BTreeMap<String, Number>,
    /// Parameters removed before sending.
    #[serde(default)]
    pub drop: Vec<String>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self == &Overrides::default()
    }

    /// The request as this deployment is to receive it (borrowed when nothing changes).
    pub fn apply<'a>(&self, request: &'a ChatRequest) -> Cow<'a, ChatRequest> {
        if self.is_empty() {
            return Cow::Borrowed(request);
        }
        let mut shaped = request.clone();
        for name in &self.drop {
            shaped.extra.remove(name);
        }
        for (name, value) in &self.set {
            shaped.extra.insert(name.clone(), value.clone());
        }
        for (name, bound) in &self.max {
            let over = shaped
                .extra
                .get(name)
                .and_then(Value::as_f64)
                .zip(bound.as_f64())
                .is_some_and(|(value, bound)| value > bound);
            if over {
                shaped
                    .extra
                    .insert(name.clone(), Value::Number(bound.clone()));
            }
        }
        if let Some(template) = &self.system_prompt {
            shaped.messages = with_system_prompt(&shaped.messages, template);
        }
        Cow::Owned(shaped)
    }

    /// What is wrong with these overrides, each problem under `path`.
    pub fn problems(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| {
            problems.push(Problem {
                path: format!("{path}.{field}"),
                message,
            })
        };
        // `model` and `messages` are not parameters: the deployment and the conversation
        // decide them.
        for reserved in ["model", "messages"] {
            if self.set.contains_key(reserved) {
                problem(
                    format!("set.{reserved}"),
                    format!("\"{reserved}\" cannot be overridden"),
                );
            }
            if self.drop.iter().any(|name| name == reserved) {
                problem("drop".into(), format!("\"{reserved}\" cannot be dropped"));
            }
        }
        for name in self.set.keys() {
            if self.drop.contains(name) {
                problem(
                    format!("set.{name}"),
                    "is both set and dropped; keep one".into(),
                );
            }
        }
        problems
    }
}

/// `messages` with every system and developer message replaced by one system message
/// rendered from `template`, first (none when the rendering is empty).
fn with_system_prompt(messages: &[Value], template: &str) -> Vec<Value> {
    let is_system = |m: &Value| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        )
    };
    let original: Vec<String> = messages
        .iter()
        .filter(|m| is_system(m))
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .filter(|text| !text.is_empty())
        .collect();
    let rendered = template.replace(ORIGINAL_SYSTEM, &original.join("\n\n"));
    let rendered = rendered.trim();
    let mut shaped = Vec::with_capacity(messages.len() + 1);
    if !rendered.is_empty() {
        shaped.push(serde_json::json!({"role": "system", "content": rendered}));
    }
    shaped.extend(messages.iter().filter(|m| !is_system(m)).cloned());
    shaped
}

/// The text of a message's `content`: a string, or the `text` of its text parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn overrides(toml_text: &str) -> Overrides {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn the_template_wraps_the_original_system_prompts_and_replaces_them() {
        let original = request(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        ]}));
        let wrapped = overrides("system_prompt = \"House style.\\n\\n{system}\"");
        let shaped = wrapped.apply(&original);
        assert_eq!(
            shaped.messages,
            vec![
                json!({"role": "system", "content": "House style.\n\nBe brief.\n\nUse metric units."}),
                json!({"role": "user", "content": "hi"}),
            ]
        );
        // Without the placeholder the original is replaced; with no original, the
        // placeholder renders empty.
        let replaced = overrides("system_prompt = \"Only this.\"").apply(&original);
        assert_eq!(replaced.messages[0]["content"], "Only this.");
        assert_eq!(replaced.messages.len(), 2);
        let bare = request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let shaped = wrapped.apply(&bare);
        assert_eq!(shaped.messages[0]["content"], "House style.");
        // The client's request is untouched.
        assert_eq!(original.messages.len(), 3);
    }

    #[test]
    fn parameters_are_dropped_set_and_bounded_in_that_order() {
        let original = request(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 1.7, "max_tokens": 8000, "seed": 7, "top_p": 0.5}),
        );
        let shaping = overrides(
            "set = { top_p = 0.9, user = \"sluice\" }\n\
             max = { temperature = 1.0, max_tokens = 2048, presence_penalty = 0.5 }\n\
             drop = [\"seed\"]",
        );
        let shaped = shaping.apply(&original);
        assert_eq!(shaped.extra["temperature"], json!(1.0));
        assert_eq!(
            shaped.extra["max_tokens"],
            json!(2048),
            "an integer bound stays an integer"
        );
        assert_eq!(shaped.extra["top_p"], json!(0.9));
        assert_eq!(shaped.extra["user"], "sluice");
        assert!(!shaped.extra.contains_key("seed"));
        assert!(
            !shaped.extra.contains_key("presence_penalty"),
            "a bound adds nothing that was absent"
        );
        let within = request(json!({"model": "m", "messages": [], "temperature": 0.2}));
        assert_eq!(shaping.apply(&within).extra["temperature"], json!(0.2));
        assert!(matches!(
            Overrides::default().apply(&original),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn overriding_the_model_or_messages_is_refused_with_its_path() {
        let bad = overrides("set = { model = \"x\", seed = 1 }\ndrop = [\"messages\", \"seed\"]");
        let problems: Vec<String> = bad
            .problems("deployments.d.overrides")
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        assert_eq!(
            problems,
            [
                "deployments.d.overrides.set.model: \"model\" cannot be overridden",
                "deployments.d.overrides.drop: \"messages\" cannot be dropped",
                "deployments.d.overrides.set.seed: is both set and dropped; keep one",
            ]
        );
        assert!(Overrides::default().problems("x").is_empty());
    }
}
