//! `/v1/embeddings`: reads the client's request, writes the upstream's, and
//! reads and writes the answer, whose vectors are float arrays or (with
//! `encoding_format: "base64"`) base64 strings of little-endian `f32`s.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::build::PatchedBody;
use super::parse::{collect_seq, read_body, read_fields, required_model};
use super::wire::{WireUsage, error_from_field, index_or, lenient_count, lenient_text, to_json};
use crate::canonical::*;
use crate::error::{DecodeError, RequestError, TranslateError};

#[derive(Debug, Deserialize)]
struct WireRequest {
    model: Option<String>,
    input: Option<WireInput>,
    dimensions: Option<u32>,
    encoding_format: Option<String>,
    user: Option<String>,
}

/// Reads a client's `/v1/embeddings` body.
pub fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, RequestError> {
    let body = read_body(body)?;
    let wire: WireRequest = read_fields(&body)?;
    let model = required_model(wire.model)?;
    let input = match wire.input {
        None => {
            return Err(RequestError::at(
                "input",
                "is required: a string, an array of strings or an array of token arrays",
            ));
        }
        Some(input) => input.into_canonical()?,
    };
    if let Some(format) = wire.encoding_format.as_deref()
        && format != "float"
        && format != "base64"
    {
        return Err(RequestError::at(
            "encoding_format",
            format!("unknown format `{format}`; valid formats are float and base64"),
        ));
    }
    Ok(EmbeddingsRequest {
        model,
        input,
        dimensions: wire.dimensions,
        user: wire.user,
        native: Some(NativeBody { format: Format::OpenAi, body }),
    })
}

/// Whether the client asked for base64 vectors (`encoding_format`), which
/// the canonical request does not carry: pass the answer to
/// [`write_embeddings_response_as`] when it came from a non-OpenAI upstream.
pub fn wants_base64(req: &EmbeddingsRequest) -> bool {
    req.native.as_ref().and_then(|n| n.body.get("encoding_format")).and_then(Value::as_str)
        == Some("base64")
}

/// `input`: a string, strings, one token array or several.
#[derive(Debug)]
enum WireInput {
    Text(String),
    Items(Vec<InputItem>),
}

#[derive(Debug)]
enum InputItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

const INPUT_EXPECTED: &str =
    "a string, an array of strings, an array of token integers or an array of token arrays";

impl<'de> Deserialize<'de> for WireInput {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = WireInput;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(INPUT_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireInput::Text(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(WireInput::Items)
            }
        }

        de.deserialize_any(InputVisitor)
    }
}

impl<'de> Deserialize<'de> for InputItem {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = InputItem;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token integer or an array of token integers")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InputItem::Text(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(InputItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a token id"))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(InputItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"a token id"))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                collect_seq(seq).map(InputItem::Tokens)
            }
        }

        de.deserialize_any(ItemVisitor)
    }
}

impl WireInput {
    /// The items of an array must all be of one kind.
    fn into_canonical(self) -> Result<EmbeddingInput, RequestError> {
        let items = match self {
            WireInput::Text(text) => return Ok(EmbeddingInput::Texts(vec![text])),
            WireInput::Items(items) if items.is_empty() => {
                return Err(RequestError::at("input", "must not be empty"));
            }
            WireInput::Items(items) => items,
        };
        let mixed = || {
            RequestError::at("input", format!("mixes kinds of items; expected {INPUT_EXPECTED}"))
        };
        match &items[0] {
            InputItem::Text(_) => items
                .into_iter()
                .map(|item| match item {
                    InputItem::Text(text) => Ok(text),
                    _ => Err(mixed()),
                })
                .collect::<Result<_, _>>()
                .map(EmbeddingInput::Texts),
            InputItem::Token(_) => items
                .into_iter()
                .map(|item| match item {
                    InputItem::Token(token) => Ok(token),
                    _ => Err(mixed()),
                })
                .collect::<Result<_, _>>()
                .map(|tokens| EmbeddingInput::Tokens(vec![tokens])),
            InputItem::Tokens(_) => items
                .into_iter()
                .map(|item| match item {
                    InputItem::Tokens(tokens) => Ok(tokens),
                    _ => Err(mixed()),
                })
                .collect::<Result<_, _>>()
                .map(EmbeddingInput::Tokens),
        }
    }
}

#[derive(Debug, Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    input: OutInput<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OutInput<'a> {
    Texts(&'a [String]),
    Tokens(&'a [Vec<u32>]),
}

/// Writes the body to send upstream for `model`: the client's own body with
/// only the model replaced, or one built from the canonical request.
pub fn write_embeddings_request(
    req: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let written = match req.native.as_ref().filter(|n| n.format == Format::OpenAi) {
        Some(native) => serde_json::to_vec(&PatchedBody {
            body: &native.body,
            set: &[("model", Value::String(model.to_owned()))],
            remove: &[],
        }),
        None => serde_json::to_vec(&OutRequest {
            model,
            input: match &req.input {
                EmbeddingInput::Texts(texts) => OutInput::Texts(texts),
                EmbeddingInput::Tokens(tokens) => OutInput::Tokens(tokens),
            },
            dimensions: req.dimensions,
            user: req.user.as_deref(),
        }),
    };
    written.map_err(|err| TranslateError::new(format!("cannot serialise the request: {err}")))
}

#[derive(Debug, Deserialize)]
struct WireResponse {
    data: Option<Vec<WireEmbedding>>,
    #[serde(default, deserialize_with = "lenient_text")]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireEmbedding {
    #[serde(default, deserialize_with = "lenient_count")]
    index: Option<u64>,
    embedding: Option<WireVector>,
}

/// A vector as floats, or as the base64 of its little-endian `f32`s.
#[derive(Debug)]
enum WireVector {
    Floats(Vec<f32>),
    Base64(String),
}

/// Read by hand rather than as an untagged enum, which would buffer every
/// vector before reading it a second time.
impl<'de> Deserialize<'de> for WireVector {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct VectorVisitor;

        impl<'de> Visitor<'de> for VectorVisitor {
            type Value = WireVector;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of numbers or a base64 string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireVector::Base64(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Upstream vectors are trusted to be as long as they say.
                let mut floats = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(value) = seq.next_element::<f32>()? {
                    floats.push(value);
                }
                Ok(WireVector::Floats(floats))
            }
        }

        de.deserialize_any(VectorVisitor)
    }
}

/// Decodes an upstream embeddings answer, keeping the body for verbatim replay.
pub fn read_embeddings_response(body: Bytes) -> Result<EmbeddingsResponse, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let wire: WireResponse = serde_path_to_error::deserialize(de).map_err(|err| {
        DecodeError::new(format!("an OpenAI embeddings answer could not be read: {err}"))
    })?;
    let Some(data) = wire.data else {
        let reported =
            wire.error.as_ref().and_then(|e| error_from_field(e, &serde_json::Map::new()));
        return Err(DecodeError::new(match reported {
            Some(error) => format!("the upstream answered with an error: {}", error.message),
            None => "an OpenAI embeddings answer has no `data`".to_owned(),
        }));
    };
    let mut indexed = Vec::with_capacity(data.len());
    for (i, item) in data.into_iter().enumerate() {
        let vector = match item.embedding {
            Some(WireVector::Floats(floats)) => floats,
            Some(WireVector::Base64(text)) => decode_vector(i, &text)?,
            None => return Err(DecodeError::new(format!("data[{i}] has no `embedding`"))),
        };
        indexed.push((index_or(item.index, i), vector));
    }
    // Answers come in input order; sorting by `index` makes sure of it.
    indexed.sort_by_key(|(index, _)| *index);
    Ok(EmbeddingsResponse {
        model: wire.model.unwrap_or_default(),
        embeddings: indexed.into_iter().map(|(_, vector)| vector).collect(),
        usage: wire.usage.map(|u| u.to_canonical()).unwrap_or_default(),
        native: Some(NativeResponse { format: Format::OpenAi, body }),
    })
}

fn decode_vector(i: usize, text: &str) -> Result<Vec<f32>, DecodeError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|err| DecodeError::new(format!("data[{i}].embedding is not base64: {err}")))?;
    if bytes.len() % 4 != 0 {
        return Err(DecodeError::new(format!(
            "data[{i}].embedding holds {} bytes, not a whole number of f32s",
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn encode_vector(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

#[derive(Debug, Serialize)]
struct OutResponse<'a> {
    object: &'static str,
    data: Vec<OutEmbedding<'a>>,
    model: &'a str,
    usage: OutUsage,
}

#[derive(Debug, Serialize)]
struct OutEmbedding<'a> {
    object: &'static str,
    index: usize,
    embedding: OutVector<'a>,
}

/// Floats are serialised as `f32`s, so they print as short as they were read.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OutVector<'a> {
    Floats(&'a [f32]),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct OutUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// Writes the answer for an OpenAI client, with float vectors.
pub fn write_embeddings_response(resp: &EmbeddingsResponse) -> Vec<u8> {
    write_embeddings_response_as(resp, false)
}

/// Writes the answer for an OpenAI client: the upstream's own body when it
/// spoke OpenAI (it was asked in the client's own encoding), else one built
/// with base64 vectors when `base64` (see [`wants_base64`]) or float arrays.
pub fn write_embeddings_response_as(resp: &EmbeddingsResponse, base64: bool) -> Vec<u8> {
    if let Some(native) = resp.native.as_ref().filter(|n| n.format == Format::OpenAi) {
        return native.body.to_vec();
    }
    let data = resp
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| OutEmbedding {
            object: "embedding",
            index,
            embedding: if base64 {
                OutVector::Base64(encode_vector(vector))
            } else {
                OutVector::Floats(vector)
            },
        })
        .collect();
    to_json(&OutResponse {
        object: "list",
        data,
        model: &resp.model,
        usage: OutUsage {
            prompt_tokens: resp.usage.input_tokens,
            total_tokens: resp.usage.total(),
        },
    })
}
