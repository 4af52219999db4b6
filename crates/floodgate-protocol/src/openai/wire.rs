//! Pieces of the OpenAI wire format that requests, responses and streams
//! share: lenient reading of counts and usage, finish reasons, tool calls as
//! written, and the `{"error":{…}}` object in both directions.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{FinishReason, Usage};
use crate::error::UpstreamErrorBody;

/// Reads a count that compatible servers may send as an integer, a float, a
/// numeric string or null. Anything unusable reads as `None` rather than
/// failing the whole body: a count is never worth losing an answer for.
pub(super) fn lenient_count<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    de.deserialize_any(CountVisitor)
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a count")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.is_finite() && v >= 0.0 {
            // Truncation is the intent: a float count is a whole number
            // written oddly, and `as` saturates at `u64::MAX`.
            Ok(Some(v as u64))
        } else {
            Ok(None)
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim().parse::<u64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => v.trim().parse::<f64>().map_or(Ok(None), |f| self.visit_f64(f)),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(CountVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Reads tool-call arguments: a JSON text as OpenAI sends them, or (from a
/// few compatible servers) the arguments object itself, which is serialised.
pub(super) fn arguments_text<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(de)? {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    })
}

/// Reads a text field that a compatible server may send as a number (an id)
/// or as something else entirely, which reads as absent.
pub(super) fn lenient_text<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(de)? {
        Some(Value::String(text)) => Some(text),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    })
}

/// An `index` field, or the item's position when a server leaves it out.
pub(super) fn index_or(index: Option<u64>, position: usize) -> u32 {
    match index {
        Some(index) => u32::try_from(index).unwrap_or(u32::MAX),
        None => u32::try_from(position).unwrap_or(u32::MAX),
    }
}

/// Saturates a count into the canonical `u32`.
pub(super) fn to_u32(count: Option<u64>) -> u32 {
    count.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The `usage` object of a completion, a chunk or an embeddings answer.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireUsage {
    #[serde(default, deserialize_with = "lenient_count")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_count")]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WireTokenDetails>,
    #[serde(default)]
    completion_tokens_details: Option<WireTokenDetails>,
    /// DeepSeek reports cache hits here instead of in `prompt_tokens_details`.
    #[serde(default, deserialize_with = "lenient_count")]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct WireTokenDetails {
    #[serde(default, deserialize_with = "lenient_count")]
    cached_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_count")]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn to_canonical(&self) -> Usage {
        let details = |d: &Option<WireTokenDetails>, pick: fn(&WireTokenDetails) -> Option<u64>| {
            d.as_ref().and_then(pick)
        };
        let cached = details(&self.prompt_tokens_details, |d| d.cached_tokens)
            .or(self.prompt_cache_hit_tokens);
        Usage {
            input_tokens: to_u32(self.prompt_tokens),
            output_tokens: to_u32(self.completion_tokens),
            cache_read_tokens: to_u32(cached),
            cache_creation_tokens: 0,
            reasoning_tokens: to_u32(details(&self.completion_tokens_details, |d| {
                d.reasoning_tokens
            })),
        }
    }
}

/// The `usage` object as OpenAI writes it on a completion or the last chunk.
#[derive(Debug, Serialize)]
pub(super) struct OutUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: OutPromptDetails,
    completion_tokens_details: OutCompletionDetails,
}

#[derive(Debug, Serialize)]
struct OutPromptDetails {
    cached_tokens: u32,
}

#[derive(Debug, Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u32,
}

impl From<&Usage> for OutUsage {
    fn from(usage: &Usage) -> Self {
        OutUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.total(),
            prompt_tokens_details: OutPromptDetails { cached_tokens: usage.cache_read_tokens },
            completion_tokens_details: OutCompletionDetails {
                reasoning_tokens: usage.reasoning_tokens,
            },
        }
    }
}

/// An assistant tool call as OpenAI writes it in requests and completions.
#[derive(Debug, Serialize)]
pub(super) struct OutToolCall<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: OutFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
pub(super) struct OutFunctionCall<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: &'a str,
}

impl<'a> OutToolCall<'a> {
    pub(super) fn new(id: &'a str, name: &'a str, arguments: &'a str) -> Self {
        OutToolCall { id, kind: "function", function: OutFunctionCall { name, arguments } }
    }
}

/// Reads an OpenAI `finish_reason`. The legacy `function_call` is the old
/// name of `tool_calls`; anything unknown is kept verbatim.
pub(super) fn finish_reason_from(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Writes a canonical finish reason in OpenAI's vocabulary. OpenAI has no
/// word for the reasons other formats add, and `stop` is what its clients
/// treat as a normal end.
pub(super) fn finish_reason_str(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence(_) | FinishReason::Other(_) => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Serialises a value built by this module. `serde_json` fails only on maps
/// with non-string keys and on failing `Serialize` impls, neither of which
/// these types have, so the empty fallback is never taken.
pub(super) fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Appends `data: <json>\n\n`. Serialised JSON holds no raw newline, so one
/// `data:` line is the whole event. Should serialisation ever fail, nothing
/// is appended rather than half an event.
pub(super) fn push_data<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends the stream terminator.
pub(super) fn push_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// Reads an error body: OpenAI's `{"error":{"message","type","code","param"}}`,
/// or the shapes compatible servers use instead: `{"error":"text"}`,
/// `{"message":"…"}`, FastAPI's `{"detail":"…"}` or `{"detail":[{"msg"}…]}`.
/// `None` when the body says nothing recognisable.
pub fn read_error(body: &[u8]) -> Option<UpstreamErrorBody> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    if let Some(error) = obj.get("error").filter(|e| !e.is_null()) {
        return error_from_field(error, obj);
    }
    if let Some(message) = obj.get("message").and_then(Value::as_str) {
        return Some(UpstreamErrorBody {
            message: message.to_owned(),
            kind: text_field(obj, "type"),
            code: code_field(obj),
        });
    }
    detail_message(obj.get("detail")?).map(|message| UpstreamErrorBody {
        message,
        kind: None,
        code: None,
    })
}

/// Reads the value of an `error` field; `outer` is the object holding it,
/// where `{"error":"text"}` bodies keep their `type` and `code`.
pub(super) fn error_from_field(
    error: &Value,
    outer: &Map<String, Value>,
) -> Option<UpstreamErrorBody> {
    match error {
        Value::Object(err) => {
            let kind = text_field(err, "type");
            let code = code_field(err);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| kind.clone())
                .or_else(|| code.clone())?;
            Some(UpstreamErrorBody { message, kind, code })
        }
        Value::String(message) => Some(UpstreamErrorBody {
            message: message.clone(),
            kind: text_field(outer, "type"),
            code: code_field(outer),
        }),
        _ => None,
    }
}

fn text_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// OpenAI codes are strings (`"rate_limit_exceeded"`); some servers send the
/// HTTP status as a number instead.
fn code_field(obj: &Map<String, Value>) -> Option<String> {
    match obj.get("code")? {
        Value::String(code) => Some(code.clone()),
        Value::Number(code) => Some(code.to_string()),
        _ => None,
    }
}

fn detail_message(detail: &Value) -> Option<String> {
    match detail {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => {
            let messages: Vec<&str> =
                items.iter().filter_map(|item| item.get("msg").and_then(Value::as_str)).collect();
            (!messages.is_empty()).then(|| messages.join("; "))
        }
        _ => None,
    }
}

/// The error object, written by [`error_body`] and by the stream writer.
#[derive(Debug, Serialize)]
pub(super) struct ErrorEnvelope<'a> {
    pub(super) error: ErrorObject<'a>,
}

#[derive(Debug, Serialize)]
pub(super) struct ErrorObject<'a> {
    pub(super) message: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'a str,
    pub(super) code: Option<&'a str>,
    pub(super) param: Option<&'a str>,
}

/// `{"error":{"message","type","code","param"}}`
pub fn error_body(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    to_json(&ErrorEnvelope { error: ErrorObject { message, kind, code, param } })
}
