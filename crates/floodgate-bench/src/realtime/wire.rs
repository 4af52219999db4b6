//! The JSON of the realtime contract: the plain WebSocket frames (`op` frames and room
//! messages), the envelope Socket.IO events share with them, the probe the publisher puts in
//! each message (`run`, `sent_us`, `seq`, `pad`), and the per-connection record of sequence
//! numbers seen (to count duplicates).

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a plain WebSocket frame, or of the object a Socket.IO event carries. Unknown
/// fields (`client`, `offset`, ...) are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow, default)]
    pub op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
}

/// What a plain WebSocket text frame says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WsFrame<'a> {
    /// `{"op":"connected",...}`.
    Hello,
    /// `{"op":"subscribed","topic":...}`.
    Subscribed(Cow<'a, str>),
    /// `{"op":"error","message":...}`.
    Error(String),
    /// `{"topic":...,"event":"message","data":...}`: the topic and the probe in `data`, if
    /// the data is one.
    Message { topic: Cow<'a, str>, probe: Option<Probe> },
    /// Anything else (not JSON, another op or event).
    Other,
}

/// What the publisher puts in a message's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct Probe {
    /// A random number of the run, so that messages of an earlier run (replayed history,
    /// another publisher) are not taken for this one's.
    pub run: u32,
    /// Unix time of the publish, in microseconds.
    pub sent_us: u64,
    /// The publisher's sequence number, from 0.
    pub seq: u64,
}

/// Reads a plain WebSocket text frame.
pub(crate) fn parse_ws(text: &str) -> WsFrame<'_> {
    let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text) else {
        return WsFrame::Other;
    };
    match envelope.op.as_deref() {
        Some("connected") => WsFrame::Hello,
        Some("subscribed") => WsFrame::Subscribed(envelope.topic.unwrap_or_default()),
        Some("error") => WsFrame::Error(error_message(envelope.message)),
        Some(_) => WsFrame::Other,
        None => match (envelope.event.as_deref(), envelope.topic) {
            (Some("message"), Some(topic)) => {
                WsFrame::Message { topic, probe: envelope.data.and_then(probe) }
            }
            _ => WsFrame::Other,
        },
    }
}

/// The probe in a message's data, if it is one.
pub(crate) fn probe(data: &RawValue) -> Option<Probe> {
    serde_json::from_str(data.get()).ok()
}

/// An error's message as the report shows it.
pub(crate) fn error_message(message: Option<Cow<'_, str>>) -> String {
    match message {
        Some(message) if !message.is_empty() => message.into_owned(),
        _ => "(no message)".to_string(),
    }
}

/// `{"op":"subscribe","topic":...}`.
pub(crate) fn subscribe_frame(topic: &str) -> String {
    serde_json::json!({"op": "subscribe", "topic": topic}).to_string()
}

/// The `pad` that brings `{"run":…,"sent_us":…,"seq":…,"pad":"…"}` to about
/// `message_bytes`, for run `run` and sequence numbers below `messages`.
pub(crate) fn pad(message_bytes: usize, messages: u64, run: u32) -> String {
    // {"run":<digits>,"sent_us":<16 digits>,"seq":<digits>,"pad":""}
    let frame = r#"{"run":,"sent_us":,"seq":,"pad":""}"#.len()
        + run.to_string().len()
        + 16
        + messages.saturating_sub(1).to_string().len();
    "x".repeat(message_bytes.saturating_sub(frame))
}

/// A publish body, `{"data":{"run":…,"sent_us":…,"seq":…,"pad":"…"}}`.
pub(crate) fn publish_body(run: u32, sent_us: u64, seq: u64, pad: &str) -> String {
    format!(r#"{{"data":{{"run":{run},"sent_us":{sent_us},"seq":{seq},"pad":"{pad}"}}}}"#)
}

/// Now as Unix time in microseconds (the publisher and the receivers share this clock).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded (for a token
/// in a query string).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The sequence numbers one connection has received, as a bitset that grows with the
/// highest one (nothing for a connection that received nothing; 1.25 KB for 10,000 messages).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    words: Vec<u64>,
}

impl Seen {
    /// Notes `seq`; false when it had been seen already.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_frame() {
        assert_eq!(parse_ws(r#"{"op":"connected","client":"c1"}"#), WsFrame::Hello);
        assert_eq!(
            parse_ws(r#"{"op":"subscribed","topic":"room:a","offset":3}"#),
            WsFrame::Subscribed("room:a".into())
        );
        assert_eq!(
            parse_ws(r#"{"op":"error","message":"no such room"}"#),
            WsFrame::Error("no such room".into())
        );
        assert_eq!(parse_ws(r#"{"op":"error"}"#), WsFrame::Error("(no message)".into()));
        assert_eq!(
            parse_ws(
                r#"{"topic":"room:a","event":"message","data":{"run":7,"sent_us":5,"seq":2,"pad":"xx"},"offset":9}"#
            ),
            WsFrame::Message {
                topic: "room:a".into(),
                probe: Some(Probe { run: 7, sent_us: 5, seq: 2 })
            }
        );
        assert_eq!(
            parse_ws(r#"{"topic":"room:a","event":"message","data":"hello"}"#),
            WsFrame::Message { topic: "room:a".into(), probe: None }
        );
        assert_eq!(parse_ws(r#"{"topic":"room:a","event":"presence"}"#), WsFrame::Other);
        assert_eq!(parse_ws("not json"), WsFrame::Other);
    }

    #[test]
    fn escaped_topics_are_read() {
        assert_eq!(
            parse_ws(r#"{"op":"subscribed","topic":"room:\u0061"}"#),
            WsFrame::Subscribed("room:a".into())
        );
    }

    #[test]
    fn the_publish_body_is_about_the_asked_size() {
        let pad = pad(100, 1000, 123_456);
        let body = publish_body(123_456, 1_750_000_000_000_000, 999, &pad);
        let data = &body[r#"{"data":"#.len()..body.len() - 1];
        assert_eq!(data.len(), 100, "{data}");
        let probe = probe(&RawValue::from_string(data.to_string()).unwrap()).unwrap();
        assert_eq!(probe, Probe { run: 123_456, sent_us: 1_750_000_000_000_000, seq: 999 });
        assert_eq!(super::pad(10, 1000, 1), "");
    }

    #[test]
    fn seen_counts_each_sequence_number_once() {
        let mut seen = Seen::default();
        assert!(seen.insert(0));
        assert!(seen.insert(130));
        assert!(!seen.insert(130));
        assert!(seen.insert(64));
        assert!(!seen.insert(0));
        assert_eq!(seen.words.len(), 3);
    }

    #[test]
    fn tokens_are_percent_encoded() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("k y&z=é"), "k%20y%26z%3D%C3%A9");
    }

    #[test]
    fn the_clock_is_unix_microseconds() {
        // After 2020 and before 2100.
        assert!((1_577_836_800_000_000..4_102_444_800_000_000).contains(&unix_micros()));
    }
}
