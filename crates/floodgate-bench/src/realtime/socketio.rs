//! The little of engine.io v4 and Socket.IO v5 (the protocol of Socket.IO v4) a client on the
//! websocket transport needs, namespace `/` only: reading packets (open, ping, close, CONNECT,
//! CONNECT_ERROR, DISCONNECT, EVENT) and writing the CONNECT with its auth and the events.
//!
//! A text frame is one engine.io packet: a type digit (`0` open, `1` close, `2` ping, `3` pong,
//! `4` message, `6` noop) and its data. A message's data is a Socket.IO packet: a type digit
//! (`0` CONNECT, `1` DISCONNECT, `2` EVENT, `4` CONNECT_ERROR, ...), an optional `/namespace,`,
//! an optional ack id, and a JSON payload. An EVENT's payload is `["name", args...]`.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::wire;

/// The client's answer to an engine.io ping.
pub(crate) const PONG: &str = "3";

/// One engine.io packet as the client sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// `0{...}`: the handshake (sid, ping interval and timeout, max payload).
    Open,
    /// `1`: the server closes the session.
    Close,
    /// `2`: the server's heartbeat; the client must answer [`PONG`].
    Ping,
    /// `40{...}`: CONNECT to `/` accepted.
    Connect,
    /// `44{"message":...}`: CONNECT refused, with the server's message.
    ConnectError(String),
    /// `41`: the namespace is disconnected.
    Disconnect,
    /// `42["name", arg, ...]`: an event, with its first argument (as JSON text).
    Event { name: Cow<'a, str>, arg: Option<&'a str> },
    /// Anything else: pong, noop, upgrade, another namespace, acks, binary events.
    Other,
}

/// Reads one engine.io packet.
pub(crate) fn parse(text: &str) -> Packet<'_> {
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => Packet::Open,
        Some('1') => Packet::Close,
        Some('2') => Packet::Ping,
        Some('4') => parse_socket(chars.as_str()),
        _ => Packet::Other,
    }
}

/// Reads the Socket.IO packet of an engine.io message.
fn parse_socket(text: &str) -> Packet<'_> {
    let Some(kind) = text.chars().next() else {
        return Packet::Other;
    };
    let mut rest = &text[kind.len_utf8()..];
    if rest.starts_with('/') {
        match rest.split_once(',') {
            Some(("/", after)) => rest = after,
            // Another namespace, or a bare "/nsp" (a CONNECT or DISCONNECT of it).
            _ => return Packet::Other,
        }
    }
    // An ack id, if any, precedes the payload (which starts with `[` or `{`).
    let payload = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    match kind {
        '0' => Packet::Connect,
        '1' => Packet::Disconnect,
        '2' => event(payload),
        '4' => Packet::ConnectError(connect_error(payload)),
        _ => Packet::Other,
    }
}

fn event(payload: &str) -> Packet<'_> {
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(payload) else {
        return Packet::Other;
    };
    let mut items = items.into_iter();
    let Some(Ok(name)) = items.next().map(|name| serde_json::from_str::<Cow<'_, str>>(name.get()))
    else {
        return Packet::Other;
    };
    Packet::Event { name, arg: items.next().map(RawValue::get) }
}

/// The message of a CONNECT_ERROR: `{"message": ...}`, or the payload as it is.
fn connect_error(payload: &str) -> String {
    match serde_json::from_str::<wire::Envelope<'_>>(payload) {
        Ok(envelope) => wire::error_message(envelope.message),
        Err(_) if payload.is_empty() => "(no message)".to_string(),
        Err(_) => payload.to_string(),
    }
}

/// CONNECT to `/`, with `{"token": key}` as its auth when there is a key.
pub(crate) fn connect_packet(key: Option<&str>) -> String {
    match key {
        Some(key) => format!("40{}", serde_json::json!({ "token": key })),
        None => "40".to_string(),
    }
}

/// `42["subscribe",{"topic":...}]`.
pub(crate) fn subscribe_packet(topic: &str) -> String {
    format!("42{}", serde_json::json!(["subscribe", { "topic": topic }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg<'a>(packet: &'a Packet<'a>) -> &'a str {
        match packet {
            Packet::Event { arg: Some(arg), .. } => arg,
            other => panic!("not an event with an argument: {other:?}"),
        }
    }

    #[test]
    fn reads_engine_io_packets() {
        assert_eq!(parse(r#"0{"sid":"a","pingInterval":25000,"pingTimeout":20000}"#), Packet::Open);
        assert_eq!(parse("1"), Packet::Close);
        assert_eq!(parse("2"), Packet::Ping);
        assert_eq!(parse("3"), Packet::Other);
        assert_eq!(parse("6"), Packet::Other);
        assert_eq!(parse(""), Packet::Other);
    }

    #[test]
    fn reads_socket_io_packets_of_the_main_namespace() {
        assert_eq!(parse(r#"40{"sid":"xyz"}"#), Packet::Connect);
        assert_eq!(parse(r#"40/,{"sid":"xyz"}"#), Packet::Connect);
        assert_eq!(parse("41"), Packet::Disconnect);
        assert_eq!(parse(r#"44{"message":"node full"}"#), Packet::ConnectError("node full".into()));
        assert_eq!(parse("44"), Packet::ConnectError("(no message)".into()));
        assert_eq!(parse(r#"44"bad token""#), Packet::ConnectError(r#""bad token""#.into()));
        let message = parse(r#"42["message",{"topic":"room:a","data":{"seq":1},"offset":4}]"#);
        assert!(matches!(&message, Packet::Event { name, .. } if name == "message"));
        assert_eq!(arg(&message), r#"{"topic":"room:a","data":{"seq":1},"offset":4}"#);
        let acked = parse(r#"4212["subscribed",{"topic":"room:a"}]"#);
        assert!(matches!(&acked, Packet::Event { name, .. } if name == "subscribed"));
        assert_eq!(parse(r#"42["ping"]"#), Packet::Event { name: "ping".into(), arg: None });
    }

    #[test]
    fn other_namespaces_and_malformed_events_are_other() {
        assert_eq!(parse(r#"42/admin,["message",{}]"#), Packet::Other);
        assert_eq!(parse("40/admin"), Packet::Other);
        assert_eq!(parse(r#"42{"not":"an array"}"#), Packet::Other);
        assert_eq!(parse("42[1,2]"), Packet::Other);
        assert_eq!(parse(r#"43["ack"]"#), Packet::Other);
    }

    #[test]
    fn writes_connect_and_subscribe() {
        assert_eq!(connect_packet(Some(r#"k"ey"#)), r#"40{"token":"k\"ey"}"#);
        assert_eq!(connect_packet(None), "40");
        assert_eq!(subscribe_packet("room:b"), r#"42["subscribe",{"topic":"room:b"}]"#);
    }
}
