//! Realtime against a real gateway: `/ws` (a tokio-tungstenite client),
//! room SSE, publishing, room rules, job topics, history recovery,
//! presence, caps, slow consumers, two nodes on one Redis, and Socket.IO
//! with the python-socketio client (`tests/sdk/socketio_check.py`).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the helpers fail the test at the first thing that is not as expected"
)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::helpers::{
    DEFAULT_CONFIG, Options, TestApp, eventually, json_of, parse_sse, spawn_with,
};

const MASTER: &str = "fg-test-master-key-realtime-0123";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn fresh_prefix() -> String {
    format!("fgtest{:x}:", crate::helpers::fastrand_u64())
}

fn redis_state(url: &str, prefix: &str) -> String {
    format!("[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n")
}

/// `[state]` for each backend: memory, and Redis if set.
fn backends() -> Vec<String> {
    let mut list = vec![String::new()];
    if let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") {
        list.push(redis_state(&redis, &fresh_prefix()));
    }
    list
}

async fn node(state: &str, realtime: &str) -> TestApp {
    spawn_with(Options {
        config: format!(
            "{DEFAULT_CONFIG}\n{state}\n[queue]\nworkers = 0\n[realtime]\n{realtime}\n"
        ),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await
}

/// Connects to `/ws` with `?token=`; the error when refused.
async fn try_connect(app: &TestApp, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let url = match token {
        Some(token) => format!("ws://{}/ws?token={token}", app.addr),
        None => format!("ws://{}/ws", app.addr),
    };
    tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
}

async fn connect(app: &TestApp, token: &str) -> Ws {
    let mut ws = try_connect(app, Some(token)).await.unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["op"], "connected", "{hello}");
    ws
}

/// The next text frame as JSON (pings are skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection is open")
            .expect("a frame");
        match frame {
            Frame::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Frame::Ping(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Frame::Text(value.to_string().into())).await.unwrap();
}

async fn subscribe(ws: &mut Ws, topic: &str) -> Value {
    send(ws, json!({"op": "subscribe", "topic": topic})).await;
    next_json(ws).await
}

async fn publish(app: &TestApp, key: &str, room: &str, body: Value) -> (StatusCode, Value) {
    let path = format!("/v1/rooms/{room}/messages");
    let (status, _, body) =
        json_of(app.send_as(Some(key), Method::POST, &path, Some(&body)).await).await;
    (status, body)
}

/// The close frame that ends `ws` (reading past everything else).
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed in 10 s")
        {
            Some(Ok(Frame::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

async fn create_key(app: &TestApp, body: Value) -> (String, String) {
    let (status, _, key) =
        json_of(app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&body)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    (key["id"].as_str().unwrap().to_string(), key["key"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_published_message_reaches_a_websocket_subscriber() {
    for state in backends() {
        let app = node(&state, "").await;
        let mut ws = connect(&app, MASTER).await;
        send(&mut ws, json!({"op": "ping"})).await;
        assert_eq!(next_json(&mut ws).await, json!({"op": "pong"}));
        let ack = subscribe(&mut ws, "room:demo").await;
        assert_eq!(ack, json!({"op": "subscribed", "topic": "room:demo"}));
        let (status, answer) =
            publish(&app, MASTER, "demo", json!({"data": {"text": "hello"}})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["topic"], "room:demo");
        let message = next_json(&mut ws).await;
        assert_eq!(
            message,
            json!({"topic": "room:demo", "event": "message", "data": {"text": "hello"}})
        );
        // A named event, then an unsubscribe: nothing more arrives.
        publish(&app, MASTER, "demo", json!({"data": 2, "event": "typing"})).await;
        assert_eq!(next_json(&mut ws).await["event"], "typing");
        send(&mut ws, json!({"op": "unsubscribe", "topic": "room:demo"})).await;
        assert_eq!(next_json(&mut ws).await["op"], "unsubscribed");
        publish(&app, MASTER, "demo", json!({"data": 3})).await;
        send(&mut ws, json!({"op": "ping"})).await;
        assert_eq!(next_json(&mut ws).await, json!({"op": "pong"}), "no message after unsubscribe");
        let metrics = app.metrics().await;
        for name in [
            "floodgate_realtime_connections",
            "floodgate_realtime_messages_total",
            "floodgate_realtime_fanout_seconds",
        ] {
            assert!(metrics.contains(name), "{name} missing");
        }
    }
}

#[tokio::test]
async fn connections_without_a_valid_key_are_refused() {
    let app = node("", "").await;
    for token in [None, Some("fg-not-a-key")] {
        match try_connect(&app, token).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert!(body["error"]["code"].as_str().unwrap().contains("api_key"), "{body}");
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    }
    // The key in the Authorization header works as well as ?token=.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws",
        app.addr
    ))
    .unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "connected");
    // A plain GET is told what the route is.
    let response = app.get_as(MASTER, "/ws").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("WebSocket"));
    // Bad frames are answered, not fatal.
    send(&mut ws, json!({"op": "dance"})).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["op"], "error");
    assert!(error["message"].as_str().unwrap().contains("valid ops"), "{error}");
    ws.send(Frame::Text("not json".into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], "error");
    let error = subscribe(&mut ws, "nonsense").await;
    assert!(error["message"].as_str().unwrap().contains("room:<name>"), "{error}");
    let error = subscribe(&mut ws, "room:has space").await;
    assert_eq!(error["op"], "error", "{error}");
}

#[tokio::test]
async fn room_rules_decide_who_joins_and_who_publishes() {
    let app = node("", "").await;
    let (_, team) = create_key(&app, json!({"name": "team", "rooms": ["team-1-*"]})).await;
    let (_, publisher) =
        create_key(&app, json!({"name": "pub", "scopes": ["publish"], "rooms": ["team-1-*"]}))
            .await;
    let mut ws = connect(&app, &team).await;
    assert_eq!(subscribe(&mut ws, "room:team-1-general").await["op"], "subscribed");
    let refused = subscribe(&mut ws, "room:team-2-general").await;
    assert_eq!(refused["op"], "error");
    assert_eq!(refused["topic"], "room:team-2-general");
    assert!(refused["message"].as_str().unwrap().contains("may not use room"), "{refused}");
    // Publishing needs the publish scope, and the room in the key's rules.
    let (status, body) = publish(&app, &team, "team-1-general", json!({"data": 1})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "publish_not_allowed", "{body}");
    let (status, body) = publish(&app, &publisher, "team-2-general", json!({"data": 1})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "room_not_allowed", "{body}");
    let (status, _) = publish(&app, &publisher, "team-1-general", json!({"data": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_json(&mut ws).await["data"], "hi");
    // Bad publications say what is wrong.
    let (status, body) = publish(&app, MASTER, "demo", json!({"text": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("valid fields"), "{body}");
    let (status, _) = publish(&app, MASTER, "bad%20name", json!({"data": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_job_topic_is_for_the_jobs_owner() {
    let app = node("", "").await;
    let (_, owner) = create_key(&app, json!({"name": "owner"})).await;
    let (_, other) = create_key(&app, json!({"name": "other"})).await;
    let body =
        json!({"request": {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}});
    let (status, _, job) =
        json_of(app.send_as(Some(&owner), Method::POST, "/v1/jobs", Some(&body)).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let topic = format!("job:{id}");
    let mut stranger = connect(&app, &other).await;
    let refused = subscribe(&mut stranger, &topic).await;
    assert_eq!(refused["op"], "error", "{refused}");
    let mut ws = connect(&app, &owner).await;
    assert_eq!(subscribe(&mut ws, &topic).await["op"], "subscribed");
    let response = app.send_as(Some(&owner), Method::DELETE, &format!("/v1/jobs/{id}"), None).await;
    assert!(response.status().is_success());
    let event = next_json(&mut ws).await;
    assert_eq!(event["topic"], topic);
    assert_eq!(event["event"], "cancelled", "{event}");
}

#[tokio::test]
async fn room_events_stream_as_sse() {
    let app = node("", "").await;
    let response = app.get_as(MASTER, "/v1/rooms/news/events").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    let mut seen = Vec::new();
    let mut published = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("\"data\":{\"n\":1}") {
        let chunk =
            tokio::time::timeout_at(deadline, stream.next()).await.unwrap().unwrap().unwrap();
        seen.extend_from_slice(&chunk);
        if !published && String::from_utf8_lossy(&seen).contains("subscribed") {
            publish(&app, MASTER, "news", json!({"data": {"n": 1}})).await;
            published = true;
        }
    }
    let events = parse_sse(&seen);
    assert_eq!(events[0].event.as_deref(), Some("subscribed"));
    assert_eq!(events[1].event.as_deref(), Some("message"));
    // Refusals are HTTP errors in the API's shape.
    let (_, team) = create_key(&app, json!({"name": "team", "rooms": ["team-*"]})).await;
    let (status, _, body) = json_of(app.get_as(&team, "/v1/rooms/news/events").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "room_not_allowed");
}

/// Rooms of `hist-*` keep 10 messages.
const HISTORY: &str =
    "[[realtime.rooms]]\npattern = \"hist-*\"\nhistory_size = 10\nhistory_ttl = \"1m\"\n";

#[tokio::test]
async fn a_client_recovers_what_it_missed_from_the_history() {
    for state in backends() {
        let app = node(&state, HISTORY).await;
        let mut epoch = String::new();
        for n in 1..=5 {
            let (status, answer) = publish(&app, MASTER, "hist-a", json!({"data": n})).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            assert_eq!(answer["offset"], n);
            epoch = answer["epoch"].as_str().unwrap().to_string();
        }
        let mut ws = connect(&app, MASTER).await;
        let since = json!({"offset": 2, "epoch": epoch});
        send(&mut ws, json!({"op": "subscribe", "topic": "room:hist-a", "since": since})).await;
        let ack = next_json(&mut ws).await;
        assert_eq!(ack["recovered"], true, "{ack}");
        assert_eq!(ack["offset"], 5);
        assert_eq!(ack["epoch"], epoch.as_str());
        for n in 3..=5 {
            let message = next_json(&mut ws).await;
            assert_eq!((message["data"].clone(), message["offset"].clone()), (json!(n), json!(n)));
        }
        // Live messages carry their offsets too.
        publish(&app, MASTER, "hist-a", json!({"data": 6})).await;
        assert_eq!(next_json(&mut ws).await["offset"], 6);
        // An unknown epoch: not recovered, and the history as it is.
        let mut late = connect(&app, MASTER).await;
        let since = json!({"offset": 4, "epoch": "gone"});
        send(&mut late, json!({"op": "subscribe", "topic": "room:hist-a", "since": since})).await;
        let ack = next_json(&mut late).await;
        assert_eq!(ack["recovered"], false, "{ack}");
        assert_eq!(ack["replayed"], 6);
        // SSE recovers from Last-Event-ID.
        let response = app
            .http
            .get(app.url("/v1/rooms/hist-a/events"))
            .bearer_auth(MASTER)
            .header("last-event-id", format!("{epoch}:4"))
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let mut seen = Vec::new();
        while parse_sse(&seen).len() < 3 {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.extend_from_slice(&chunk);
        }
        let events = parse_sse(&seen);
        assert_eq!(events[1].id.as_deref(), Some(format!("{epoch}:5").as_str()));
        assert_eq!(events[2].id.as_deref(), Some(format!("{epoch}:6").as_str()));
    }
}

#[tokio::test]
async fn presence_lists_who_is_in_a_room() {
    for state in backends() {
        let app = node(&state, "[[realtime.rooms]]\npattern = \"lobby\"\npresence = true\n").await;
        let (id, key) = create_key(&app, json!({"name": "guest"})).await;
        let mut a = connect(&app, MASTER).await;
        let mut b = connect(&app, &key).await;
        subscribe(&mut a, "room:lobby").await;
        subscribe(&mut b, "room:lobby").await;
        let (status, _, list) = json_of(app.get_as(MASTER, "/v1/rooms/lobby/presence").await).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["count"], 2, "{list}");
        assert!(list["clients"].as_array().unwrap().iter().any(|c| c["key_id"] == id.as_str()));
        drop(b);
        eventually(|| async {
            let (_, _, list) = json_of(app.get_as(MASTER, "/v1/rooms/lobby/presence").await).await;
            list["count"] == 1
        })
        .await;
        let (status, _, body) = json_of(app.get_as(MASTER, "/v1/rooms/other/presence").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        drop(a);
    }
}

#[tokio::test]
async fn the_node_and_key_caps_refuse_with_a_retry_hint() {
    let app = node("", "max_connections = 3\nmax_connections_per_key = 1").await;
    let (_, key) = create_key(&app, json!({"name": "capped"})).await;
    let _first = connect(&app, &key).await;
    match try_connect(&app, Some(&key)).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let _two = connect(&app, MASTER).await;
    let _three = connect(&app, MASTER).await;
    match try_connect(&app, Some(MASTER)).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "node_full", "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("max_connections"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // SSE listeners count too.
    let response = app.get_as(MASTER, "/v1/rooms/x/events").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, view) = json_of(app.get_as(MASTER, "/admin/realtime").await).await;
    assert_eq!(view["connections"], 3, "{view}");
    assert_eq!(view["by_transport"]["ws"], 3, "{view}");
    assert_eq!(view["max_connections"], 3, "{view}");
    drop(_three);
    eventually(|| async { app.state.realtime.open() == 2 }).await;
    let _again = connect(&app, MASTER).await;
}

#[tokio::test]
async fn limits_on_subscriptions_and_frame_size() {
    let app = node("", "max_subscriptions = 2\nmax_message_bytes = 1024").await;
    let mut ws = connect(&app, MASTER).await;
    subscribe(&mut ws, "room:a").await;
    subscribe(&mut ws, "room:b").await;
    let refused = subscribe(&mut ws, "room:c").await;
    assert!(refused["message"].as_str().unwrap().contains("max_subscriptions"), "{refused}");
    // A publication over the limit is a 413.
    let (status, _) = publish(&app, MASTER, "a", json!({"data": "x".repeat(2000)})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A frame over the limit closes the connection with 1009.
    send(&mut ws, json!({"op": "ping", "pad": "x".repeat(2000)})).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_and_the_others_keep_receiving() {
    let app = node("", "send_buffer = 8").await;
    let mut slow = connect(&app, MASTER).await;
    let mut fast = connect(&app, MASTER).await;
    subscribe(&mut slow, "room:firehose").await;
    subscribe(&mut fast, "room:firehose").await;
    // `slow` reads nothing while about 16 MiB is published: its socket
    // buffers fill, then its queue, and the node drops it.
    let pad = "x".repeat(32 * 1024);
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < 500 {
            if next_json(&mut fast).await.get("data").is_some() {
                got += 1;
                counted.store(got, std::sync::atomic::Ordering::Relaxed);
            }
        }
        got
    });
    for n in 0..500 {
        // Never more than half of `fast`'s queue ahead of it, however slowly
        // a loaded machine runs its reader: only `slow` is behind.
        while n - received.load(std::sync::atomic::Ordering::Relaxed) >= 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (status, _) =
            publish(&app, MASTER, "firehose", json!({"data": {"n": n, "pad": pad}})).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(tokio::time::timeout(Duration::from_secs(20), reader).await.unwrap().unwrap(), 500);
    eventually(|| async { app.state.realtime.open() == 1 }).await;
    assert!(
        app.metrics().await.contains("floodgate_realtime_dropped_total{reason=\"slow_consumer\"}")
    );
    // What it gets, once it reads: some messages, then the end.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await.unwrap() {
            Some(Ok(Frame::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(matches!(ended, Some(4008) | None), "{ended:?}");
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_ping_timeout() {
    let app = node("", "ping_interval = \"100ms\"\nping_timeout = \"100ms\"").await;
    let mut ws = connect(&app, MASTER).await;
    // Reading nothing means answering no ping.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(close_code(&mut ws).await, Some(4000));
    // One that keeps reading (and so answers pings) stays.
    let mut alive = connect(&app, MASTER).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(600);
    while let Ok(frame) = tokio::time::timeout_at(until, alive.next()).await {
        assert!(matches!(frame, Some(Ok(Frame::Ping(_)))), "{frame:?}");
    }
    send(&mut alive, json!({"op": "ping"})).await;
    assert_eq!(next_json(&mut alive).await["op"], "pong");
}

#[tokio::test]
async fn shutdown_closes_realtime_connections_with_going_away() {
    let app = node("", "").await;
    let mut ws = connect(&app, MASTER).await;
    subscribe(&mut ws, "room:a").await;
    app.begin_shutdown();
    assert_eq!(close_code(&mut ws).await, Some(1001));
    app.wait_stopped().await.unwrap();
}

#[tokio::test]
async fn nodes_on_one_redis_deliver_each_others_messages() {
    let Ok(redis) = std::env::var("FLOODGATE_TEST_REDIS_URL") else { return };
    let state = redis_state(&redis, &fresh_prefix());
    let a = node(&state, HISTORY).await;
    let b = node(&state, HISTORY).await;
    let mut on_a = connect(&a, MASTER).await;
    let mut on_b = connect(&b, MASTER).await;
    subscribe(&mut on_a, "room:hist-x").await;
    subscribe(&mut on_b, "room:hist-x").await;
    // B's subscription reaches Redis in the background: publish until it hears.
    let mut offset;
    let heard = loop {
        let (_, answer) = publish(&a, MASTER, "hist-x", json!({"data": "from a"})).await;
        offset = answer["offset"].as_u64().unwrap();
        if let Ok(Some(Ok(Frame::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(200), on_b.next()).await
        {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
        assert!(offset < 30, "node b never heard node a");
    };
    assert_eq!(heard["data"], "from a");
    // Offsets are the room's, whichever node publishes.
    let (_, answer) = publish(&b, MASTER, "hist-x", json!({"data": "from b"})).await;
    assert!(answer["offset"].as_u64().unwrap() > offset, "{answer}");
    loop {
        let message = next_json(&mut on_a).await;
        if message["data"] == "from b" {
            assert_eq!(message["offset"], answer["offset"]);
            break;
        }
    }
}

#[tokio::test]
async fn socket_io_clients_connect_subscribe_and_receive() {
    let Ok(python) = std::env::var("FLOODGATE_TEST_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set FLOODGATE_TEST_PYTHON (.ci/run does)"
        );
        println!("skipped: set FLOODGATE_TEST_PYTHON (see tests/sdk/requirements.txt)");
        return;
    };
    let app = node("", HISTORY).await;
    let (_, team) = create_key(&app, json!({"name": "team", "rooms": ["team-*", "hist-*"]})).await;
    // A node at its cap, held by one WebSocket.
    let full = node("", "max_connections = 1").await;
    let _holder = connect(&full, MASTER).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/socketio_check.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("http://{}", app.addr))
        .arg(MASTER)
        .arg(&team)
        .arg(format!("http://{}", full.addr))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "socketio_check.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: all checks"), "{stdout}");
    assert!(app.metrics().await.contains("transport=\"socketio\""));
}
