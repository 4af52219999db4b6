//! Cache keys: a SHA-256 of everything in a request that can change the answer.
//!
//! The request's JSON body is hashed in a canonical encoding: object fields
//! in sorted order, numbers by value (`1` and `1.0` are the same), strings by
//! their bytes, so field order and whitespace never matter. Only fields that
//! cannot change the answer are left out (`stream`, `stream_options`, `user`,
//! `metadata`, `store`); every other field counts, the ones the gateway does
//! not model included, so a new sampling parameter is never ignored. The
//! model is replaced by the resolved alias, the route and the namespace
//! (whose answers may be shared) are hashed in too.

use ring::digest::{Context, SHA256};
use serde_json::{Map, Value};

/// A 32-byte digest: a cache key, or a semantic cache's context.
pub type Digest = [u8; 32];

/// Body fields that never change the answer.
const IGNORED: [&str; 6] = ["model", "stream", "stream_options", "user", "metadata", "store"];

/// The exact-cache key of a request body.
pub fn exact(route: &str, alias: &str, namespace: &str, body: &Map<String, Value>) -> Digest {
    let mut hash = Hasher::new("exact", route, alias, namespace);
    hash.object(body, &IGNORED, None);
    hash.finish()
}

/// A conversation split for the semantic cache: the text of its last user
/// turn, and a digest of everything else that must match exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticParts {
    pub text: String,
    pub context: Digest,
}

/// The semantic parts of a chat body, when its last message is a user turn
/// with text (a conversation ending in tool results has no such turn).
pub fn semantic(
    route: &str,
    alias: &str,
    namespace: &str,
    body: &Map<String, Value>,
) -> Option<SemanticParts> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages.len().checked_sub(1)?;
    let message = messages[last].as_object()?;
    if message.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = user_text(message.get("content")?)?;
    let mut hash = Hasher::new("semantic", route, alias, namespace);
    hash.object(body, &IGNORED, Some(last));
    Some(SemanticParts { text, context: hash.finish() })
}

/// The text of a message's content: a string, or the text parts of a list
/// (OpenAI's `{"type":"text","text"}` and Anthropic's text blocks alike).
fn user_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    // An image or a document: its meaning is not in the text.
                    return None;
                }
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part.get("text")?.as_str()?);
            }
            (!text.is_empty()).then_some(text)
        }
        _ => None,
    }
}

struct Hasher(Context);

impl Hasher {
    fn new(kind: &str, route: &str, alias: &str, namespace: &str) -> Self {
        let mut hasher = Hasher(Context::new(&SHA256));
        hasher.0.update(b"floodgate-cache-v1");
        for part in [kind, route, alias, namespace] {
            hasher.string(part);
        }
        hasher
    }

    fn finish(self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }

    fn len(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.0.update(b"s");
        self.len(s.len());
        self.0.update(s.as_bytes());
    }

    /// `skip_message`: the index in `messages` hashed as a placeholder (the
    /// semantic cache's last user turn).
    fn object(&mut self, map: &Map<String, Value>, ignored: &[&str], skip_message: Option<usize>) {
        let mut fields: Vec<(&String, &Value)> =
            map.iter().filter(|(k, _)| !ignored.contains(&k.as_str())).collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.0.update(b"o");
        self.len(fields.len());
        for (name, value) in fields {
            self.string(name);
            match (name.as_str(), value, skip_message) {
                ("messages", Value::Array(items), Some(skip)) => {
                    self.0.update(b"a");
                    self.len(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if i == skip {
                            self.0.update(b"?");
                        } else {
                            self.value(item);
                        }
                    }
                }
                _ => self.value(value),
            }
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.0.update(b"n"),
            Value::Bool(true) => self.0.update(b"t"),
            Value::Bool(false) => self.0.update(b"f"),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                // Integers beyond f64's exact range keep every digit.
                (Some(u), _, _) if u > 1 << 53 => {
                    self.0.update(b"u");
                    self.0.update(&u.to_le_bytes());
                }
                (_, Some(i), _) if i < -(1 << 53) => {
                    self.0.update(b"i");
                    self.0.update(&i.to_le_bytes());
                }
                (_, _, Some(f)) => {
                    self.0.update(b"d");
                    // -0.0 and 0.0 mean the same temperature.
                    let f = if f == 0.0 { 0.0 } else { f };
                    self.0.update(&f.to_bits().to_le_bytes());
                }
                _ => self.string(&n.to_string()),
            },
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.0.update(b"a");
                self.len(items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) => self.object(map, &[], None),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn key_of(text: &str) -> Digest {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        exact("chat", "chat", "k:1", &body(value))
    }

    #[test]
    fn field_order_whitespace_and_number_spelling_do_not_matter() {
        let a = key_of(
            r#"{"model":"chat","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let b = key_of(
            "{ \"messages\" : [ { \"content\":\"hi\", \"role\":\"user\" } ],\n  \"temperature\": 0.0, \"model\": \"x\" }",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            key_of(r#"{"temperature":-0.0,"messages":[{"role":"user","content":"hi"}]}"#)
        );
    }

    #[test]
    fn fields_that_do_not_change_the_answer_are_ignored() {
        let base = r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
        let with = r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}],
            "stream":true,"stream_options":{"include_usage":true},"user":"u1","metadata":{"user_id":"x"},"store":false}"#;
        assert_eq!(key_of(base), key_of(with));
    }

    #[test]
    fn every_answer_changing_field_changes_the_key() {
        let base = json!({
            "temperature": 0, "max_tokens": 10, "top_p": 1,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        });
        let k = |v: &Value| exact("chat", "chat", "k:1", &body(v.clone()));
        let reference = k(&base);
        let variants: Vec<(&str, Value)> = vec![
            ("temperature", json!(0.5)),
            ("max_tokens", json!(11)),
            ("top_p", json!(0.9)),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            ("tools", json!([{"type": "function", "function": {"name": "f", "parameters": {}}}])),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("frequency_penalty", json!(0.1)),
            ("n", json!(2)),
            ("messages", json!([{"role": "user", "content": "hi"}])),
            (
                "messages",
                json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi!"}]),
            ),
        ];
        for (field, value) in variants {
            let mut changed = base.clone();
            changed[field] = value.clone();
            assert_ne!(k(&changed), reference, "{field} = {value}");
        }
        let other = |route, alias, ns| exact(route, alias, ns, &body(base.clone()));
        assert_ne!(other("messages", "chat", "k:1"), reference);
        assert_ne!(other("chat", "other", "k:1"), reference);
        assert_ne!(other("chat", "chat", "k:2"), reference);
        // A string and the same text as a one-element list are different bodies.
        assert_ne!(json!("a"), json!(["a"]));
        assert_eq!(crate::keys::hex(&reference).len(), 64);
    }

    #[test]
    fn semantic_parts_split_the_last_user_turn_from_the_rest() {
        let a = body(json!({"temperature": 0, "messages": [
            {"role": "system", "content": "geography"},
            {"role": "user", "content": "What is the capital of France?"}]}));
        let b = body(json!({"temperature": 0, "messages": [
            {"role": "system", "content": "geography"},
            {"role": "user", "content": [{"type": "text", "text": "capital of France?"}]}]}));
        let pa = semantic("chat", "chat", "shared", &a).unwrap_or_else(|| panic!("no parts"));
        let pb = semantic("chat", "chat", "shared", &b).unwrap_or_else(|| panic!("no parts"));
        assert_eq!(pa.text, "What is the capital of France?");
        assert_eq!(pb.text, "capital of France?");
        assert_eq!(pa.context, pb.context);
        let c = body(json!({"temperature": 0, "messages": [
            {"role": "system", "content": "history"},
            {"role": "user", "content": "What is the capital of France?"}]}));
        assert_ne!(semantic("chat", "chat", "shared", &c).map(|p| p.context), Some(pa.context));
        let tool =
            body(json!({"messages": [{"role": "tool", "content": "42", "tool_call_id": "a"}]}));
        assert_eq!(semantic("chat", "chat", "shared", &tool), None);
        let image = body(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}));
        assert_eq!(semantic("chat", "chat", "shared", &image), None);
    }
}
