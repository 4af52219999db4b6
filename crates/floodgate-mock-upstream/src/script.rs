//! Playing a queued [`Script`] as the response to a request.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::Script;
use crate::call::{hang, json_response, reset, sleep};
use crate::server::ConnCtx;
use crate::state::Shared;
use crate::stream::{Ending, Frames, sse_response};

/// The response `script` asks for. Hanging and resetting never return.
pub(crate) async fn play(shared: &Arc<Shared>, conn: &ConnCtx, script: Script) -> Response {
    let mut script = script;
    loop {
        match script {
            Script::Delay(duration, inner) => {
                sleep(duration).await;
                script = *inner;
            }
            Script::Status { status, headers, body } => {
                return status_response(status, &headers, body);
            }
            Script::Json(body) => return json_response(StatusCode::OK, &body),
            Script::Sse { events, delay } => {
                return sse_response(shared, event_frames(&events, delay), delay, Ending::Complete);
            }
            Script::SseThenReset { events, delay } => {
                return sse_response(shared, event_frames(&events, delay), delay, Ending::Abort);
            }
            Script::Hang => return hang(shared, conn).await,
            Script::Reset => return reset(conn).await,
        }
    }
}

/// One frame per event, so that `delay` separates every event.
fn event_frames(
    events: &[(Option<String>, String)],
    delay: std::time::Duration,
) -> Vec<bytes::Bytes> {
    let mut frames = Frames::new(delay);
    for (name, data) in events {
        frames.raw_event(name.as_deref(), data);
        frames.cut();
    }
    frames.finish()
}

fn status_response(status: u16, headers: &[(String, String)], body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match body {
        Value::Null => Response::new(Body::empty()),
        Value::String(text) => {
            let mut response = Response::new(Body::from(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        json => json_response(status, &json),
    };
    *response.status_mut() = status;
    for (name, value) in headers {
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) => {
                // A scripted content-type replaces the default one; other headers add up.
                if name == header::CONTENT_TYPE {
                    response.headers_mut().insert(name, value);
                } else {
                    response.headers_mut().append(name, value);
                }
            }
            _ => tracing::warn!(%name, "mock upstream skipped an invalid scripted header"),
        }
    }
    response
}
