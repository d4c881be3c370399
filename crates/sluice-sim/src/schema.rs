//! Example values for a JSON Schema: the arguments of a simulated tool call and the body of a
//! simulated structured (JSON mode) answer.
//!
//! A client that offers a tool or asks for a schema parses what comes back, so the simulator
//! must answer with a value that conforms: every required property present, with a value of
//! the declared type, inside the declared bounds and enums. The values are plausible rather
//! than random (`"2025-01-01"` for a date, the minimum for a bounded integer) and always the
//! same for the same schema, so tests can assert on them.
//!
//! Both dialects the providers take are read: JSON Schema (OpenAI, Anthropic, Gemini's
//! `*JsonSchema` fields) and Gemini's OpenAPI subset (`"type": "STRING"`, `nullable`).

use serde_json::{json, Map, Value};

/// How deep `$ref`s and nested objects are followed before a recursive schema is cut short
/// with the smallest value that fits.
const MAX_DEPTH: usize = 8;

/// A value that conforms to `schema`. `name` is the property (or tool) the value is for; it
/// makes strings read naturally (`"sample city"`).
pub fn example(schema: &Value, name: &str) -> Value {
    Example { root: schema }.value(schema, name, 0)
}

struct Example<'a> {
    root: &'a Value,
}

impl<'a> Example<'a> {
    fn value(&self, schema: &'a Value, name: &str, depth: usize) -> Value {
        let Some(object) = schema.as_object() else {
            // `true` or a missing schema: anything goes.
            return json!(format!("sample {name}"));
        };
        if let Some(target) = object.get("$ref").and_then(Value::as_str) {
            return match self.resolve(target) {
                Some(resolved) if depth < MAX_DEPTH => self.value(resolved, name, depth + 1),
                _ => Value::Null,
            };
        }
        if let Some(constant) = object.get("const") {
            return constant.clone();
        }
        if let Some(first) = object
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|values| values.iter().find(|v| !v.is_null()))
        {
            return first.clone();
        }
        for combinator in ["anyOf", "oneOf", "allOf", "any_of"] {
            if let Some(options) = object.get(combinator).and_then(Value::as_array) {
                // The first alternative that is not just `null` is as valid as any.
                if let Some(option) = options
                    .iter()
                    .find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                {
                    return self.value(option, name, depth + 1);
                }
            }
        }
        match schema_type(object).as_deref() {
            Some("object") => self.object(object, depth),
            Some("array") => {
                let items = object.get("items").unwrap_or(&Value::Null);
                let count = object
                    .get("minItems")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1);
                let item = if depth < MAX_DEPTH {
                    self.value(items, name, depth + 1)
                } else {
                    Value::Null
                };
                Value::Array(vec![item; count as usize])
            }
            Some("integer") => json!(integer(object)),
            Some("number") => json!(number(object)),
            Some("boolean") => json!(true),
            Some("null") => Value::Null,
            _ => json!(string(object, name)),
        }
    }

    fn object(&self, object: &'a Map<String, Value>, depth: usize) -> Value {
        let empty = Map::new();
        let properties = object
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        // Without a `required` list every property is optional; filling them all is still
        // valid and gives the client more to look at.
        let names: Vec<&str> = match object.get("required").and_then(Value::as_array) {
            Some(required) => required.iter().filter_map(Value::as_str).collect(),
            None => properties.keys().map(String::as_str).collect(),
        };
        let mut out = Map::new();
        if depth >= MAX_DEPTH {
            return Value::Object(out);
        }
        for name in names {
            let schema = properties.get(name).unwrap_or(&Value::Null);
            out.insert(name.to_string(), self.value(schema, name, depth + 1));
        }
        Value::Object(out)
    }

    /// A local reference (`#/$defs/Name`, `#/definitions/Name`); remote ones are not followed.
    fn resolve(&self, target: &str) -> Option<&'a Value> {
        let pointer = target.strip_prefix('#')?;
        self.root.pointer(pointer)
    }
}

/// The declared type, lower-cased (Gemini writes `STRING`), the first non-null one of a type
/// list, or `object` when only `properties` say so.
fn schema_type(object: &Map<String, Value>) -> Option<String> {
    match object.get("type") {
        Some(Value::String(kind)) => Some(kind.to_ascii_lowercase()),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .map(str::to_ascii_lowercase),
        _ if object.contains_key("properties") => Some("object".into()),
        _ if object.contains_key("items") => Some("array".into()),
        _ => None,
    }
}

fn bound(object: &Map<String, Value>, key: &str) -> Option<f64> {
    object.get(key).and_then(Value::as_f64)
}

fn integer(object: &Map<String, Value>) -> i64 {
    let low = bound(object, "minimum")
        .map(|m| m.ceil())
        .or_else(|| bound(object, "exclusiveMinimum").map(|m| m.floor() + 1.0));
    let high = bound(object, "maximum")
        .map(|m| m.floor())
        .or_else(|| bound(object, "exclusiveMaximum").map(|m| m.ceil() - 1.0));
    let value = match (low, high) {
        (Some(low), _) => low,
        (None, Some(high)) if high < 1.0 => high,
        _ => 1.0,
    };
    value as i64
}

fn number(object: &Map<String, Value>) -> f64 {
    let low = bound(object, "minimum").or_else(|| bound(object, "exclusiveMinimum"));
    let high = bound(object, "maximum").or_else(|| bound(object, "exclusiveMaximum"));
    match (low, high) {
        (Some(low), Some(high)) => (low + high) / 2.0,
        (Some(low), None) => low + 1.5,
        (None, Some(high)) if high <= 1.5 => high - 1.0,
        _ => 1.5,
    }
}

fn string(object: &Map<String, Value>, name: &str) -> String {
    let format = object.get("format").and_then(Value::as_str).unwrap_or("");
    let mut text = match format {
        "date-time" => "2025-01-01T12:00:00Z".to_string(),
        "date" => "2025-01-01".to_string(),
        "time" => "12:00:00".to_string(),
        "email" => "user@example.com".to_string(),
        "uri" | "url" => "https://example.com/".to_string(),
        "uuid" => "00000000-0000-4000-8000-000000000000".to_string(),
        _ => format!("sample {name}"),
    };
    let min = object.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = object
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    while text.chars().count() < min {
        text.push('x');
    }
    if let Some(max) = max {
        text = text.chars().take(max).collect();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_properties_get_values_of_their_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 3, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "when": {"type": "string", "format": "date"},
                "detailed": {"type": "boolean"},
                "ratio": {"type": "number", "minimum": 0, "maximum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "optional": {"type": "string"}
            },
            "required": ["city", "days", "unit", "when", "detailed", "ratio", "tags"],
            "additionalProperties": false
        });
        assert_eq!(
            example(&schema, "get_weather"),
            json!({
                "city": "sample city",
                "days": 3,
                "unit": "celsius",
                "when": "2025-01-01",
                "detailed": true,
                "ratio": 0.5,
                "tags": ["sample tags", "sample tags"]
            })
        );
    }

    #[test]
    fn refs_nullable_unions_and_gemini_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "address": {"$ref": "#/$defs/Address"},
                "note": {"type": ["null", "string"]},
                "choice": {"anyOf": [{"type": "null"}, {"type": "integer"}]}
            },
            "$defs": {"Address": {"type": "object", "properties": {"zip": {"type": "string", "minLength": 12}}, "required": ["zip"]}}
        });
        assert_eq!(
            example(&schema, "x"),
            json!({"address": {"zip": "sample zipxx"}, "note": "sample note", "choice": 1})
        );
        let gemini = json!({"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": true}}, "required": ["n"]});
        assert_eq!(example(&gemini, "x"), json!({"n": 1}));
    }

    #[test]
    fn recursive_schemas_end() {
        let schema = json!({
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}, "required": ["next"]}},
            "$ref": "#/$defs/Node"
        });
        let value = example(&schema, "x");
        assert!(value.to_string().len() < 200, "{value}");
    }
}
