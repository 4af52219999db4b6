//! Tests of the Anthropic translations, with payloads shaped like Anthropic's
//! documentation. Split by subject; shared builders live here.

use serde_json::Value;

use crate::canonical::*;

mod props;
mod request;
mod response;
mod stream;

fn text(text: &str) -> Part {
    Part::Text { text: text.to_owned() }
}

fn message(role: Role, content: Vec<Part>) -> Message {
    Message { role, content, name: None }
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall { id: id.to_owned(), name: name.to_owned(), arguments: arguments.to_owned() }
}

fn tool_result(id: &str, content: Vec<Part>, is_error: bool) -> Message {
    message(Role::Tool, vec![Part::ToolResult { tool_call_id: id.to_owned(), content, is_error }])
}

fn thinking(text: &str, signature: Option<&str>) -> Part {
    Part::Thinking { text: text.to_owned(), signature: signature.map(str::to_owned) }
}

fn image_url(url: &str) -> Part {
    Part::Image { source: ImageSource::Url(url.to_owned()) }
}

fn image_base64(media_type: &str, data: &str) -> Part {
    Part::Image {
        source: ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() },
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// A canonical request as code (not a client) would build it.
fn built_request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest { model: "claude-sonnet-4-5".to_owned(), messages, ..ChatRequest::default() }
}
