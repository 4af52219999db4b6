//! The response cache end to end: exact hits in L1 and (on Redis) L2,
//! stream replay in both client formats, request coalescing, the semantic
//! cache on the mock's similarity-preserving embeddings, admin routes.

use std::time::Duration;

use floodgate_mock_upstream::MockConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    DEFAULT_CONFIG, Options, TcpProxy, TestApp, data_of, eventually, json_of, parse_sse, spawn_with,
};

const MASTER: &str = "fg-test-master-key-0123456789";

fn cached_config(extra: &str) -> String {
    format!("{DEFAULT_CONFIG}\n[cache]\nenabled = true\n{extra}\n")
}

async fn spawn(extra: &str, mock: MockConfig) -> TestApp {
    spawn_with(Options {
        config: cached_config(extra),
        mock: MockConfig { record: true, ..mock },
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await
}

fn question(text: &str) -> Value {
    json!({
        "model": "gpt",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You answer in one line."},
            {"role": "user", "content": text}
        ]
    })
}

/// A chat request sent in a task of its own, so it can be in flight with
/// others (or abandoned): its status, `x-floodgate-cache` and body.
fn spawn_chat(
    app: &TestApp,
    body: &Value,
) -> tokio::task::JoinHandle<(StatusCode, String, bytes::Bytes)> {
    let (client, url, body) = (app.http.clone(), app.url("/v1/chat/completions"), body.clone());
    tokio::spawn(async move {
        let response = client.post(url).bearer_auth(MASTER).json(&body).send().await;
        let response = response.unwrap_or_else(|e| panic!("request failed: {e}"));
        let cache = cache_header(response.headers()).to_string();
        let status = response.status();
        (status, cache, response.bytes().await.unwrap_or_else(|e| panic!("body failed: {e}")))
    })
}

fn chat_calls(app: &TestApp) -> usize {
    app.upstream_requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
}

fn cache_header(headers: &reqwest::header::HeaderMap) -> &str {
    headers.get("x-floodgate-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn post(
    app: &TestApp,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    app.post_with(path, body, headers).await
}

#[tokio::test]
async fn identical_requests_are_answered_from_l1_without_an_upstream_call() {
    let app = spawn("", MockConfig::default()).await;
    let (status, headers, first) =
        json_of(post(&app, "/v1/chat/completions", &question("Capital of France?"), &[]).await)
            .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(cache_header(&headers), "miss");
    // Field order, whitespace and number spelling do not matter.
    let reordered = r#"{ "messages": [ {"content": "You answer in one line.", "role": "system"},
        {"role":"user","content":"Capital of France?"} ], "temperature": 0.0, "model": "gpt", "user": "someone" }"#;
    let response = app.post_raw("/v1/chat/completions", reordered).await;
    let (status, headers, second) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_header(&headers), "hit");
    assert_eq!(headers["x-floodgate-cache-layer"], "l1");
    assert!(headers.contains_key("age"));
    assert_eq!(headers["x-floodgate-provider"], "oai");
    assert_eq!(second, first);
    assert_eq!(chat_calls(&app), 1);
    // Anything that changes the answer is another entry.
    let mut other = question("Capital of France?");
    other["max_tokens"] = json!(5);
    let (_, headers, _) = json_of(post(&app, "/v1/chat/completions", &other, &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    assert_eq!(chat_calls(&app), 2);

    // The hit is in the ledger, at no cost.
    app.ledger_after(3).await;
    let report = app
        .state
        .store
        .usage_report(&floodgate_core::store::UsageQuery {
            from_ms: None,
            to_ms: None,
            group_by: Vec::new(),
            key_id: None,
        })
        .await
        .unwrap();
    assert_eq!(report[0].requests, 3);
    assert_eq!(report[0].cache_hits, 1);
    let metrics = app.metrics().await;
    // The recorder is the process's: other tests count too.
    assert!(
        metrics.contains(r#"floodgate_cache_lookups_total{model="gpt",result="hit_l1"}"#),
        "{metrics}"
    );
    let (_, _, view) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
    assert_eq!(view["models"]["gpt"]["hit_l1"], 1);
    assert_eq!(view["models"]["gpt"]["miss"], 2);
    assert_eq!(view["l1"]["entries"], 2);
}

#[tokio::test]
async fn sampled_requests_bypass_the_cache_unless_the_alias_allows_it() {
    let app = spawn("", MockConfig::default()).await;
    let mut sampled = question("Tell me a story.");
    sampled["temperature"] = json!(0.8);
    for _ in 0..2 {
        let (status, headers, _) =
            json_of(post(&app, "/v1/chat/completions", &sampled, &[]).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cache_header(&headers), "bypass");
    }
    assert_eq!(chat_calls(&app), 2);
    let config = DEFAULT_CONFIG.replace(
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]",
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]\ncache = { sampled = true, ttl_seconds = 60 }",
    );
    let app = spawn_with(Options {
        config: format!("{config}\n[cache]\nenabled = true\n"),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await;
    for expected in ["miss", "hit"] {
        let (_, headers, _) =
            json_of(post(&app, "/v1/chat/completions", &sampled, &[]).await).await;
        assert_eq!(cache_header(&headers), expected);
    }
}

#[tokio::test]
async fn cache_control_and_ttl_headers_are_honoured() {
    let app = spawn("", MockConfig::default()).await;
    let body = question("Headers?");
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let (app, body) = (&app, &body);
        async move { json_of(post(app, "/v1/chat/completions", body, headers).await).await }
    };
    // no-store: answered, not stored.
    assert_eq!(cache_header(&send(&[("cache-control", "no-store")]).await.1), "miss");
    assert_eq!(cache_header(&send(&[("cache-control", "no-store")]).await.1), "miss");
    assert_eq!(cache_header(&send(&[]).await.1), "miss");
    assert_eq!(cache_header(&send(&[]).await.1), "hit");
    // no-cache: a fresh answer, which is stored.
    assert_eq!(cache_header(&send(&[("cache-control", "no-cache")]).await.1), "miss");
    assert_eq!(chat_calls(&app), 4);
    let (status, _, error) = send(&[("x-floodgate-cache-ttl", "soon")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("x-floodgate-cache-ttl") && message.contains("10m"), "{message}");
    assert_eq!(chat_calls(&app), 4, "a bad header is refused before the upstream");
}

/// The text of an OpenAI stream, and whether it carried usage.
fn openai_stream_text(events: &[floodgate_protocol::sse::SseEvent]) -> (String, Option<Value>) {
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let mut text = String::new();
    let mut usage = None;
    for chunk in data_of(events) {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    (text, usage)
}

#[tokio::test]
async fn a_streaming_request_is_replayed_as_a_valid_stream_in_each_format() {
    let app = spawn("", MockConfig { chunks: 5, ..MockConfig::default() }).await;
    let mut body = question("Stream it.");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, events) = app.post_sse("/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_header(&headers), "miss");
    let (live_text, live_usage) = openai_stream_text(&events);
    assert!(!live_text.is_empty());
    let (status, headers, events) = app.post_sse("/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_header(&headers), "hit");
    assert_eq!(headers["content-type"], "text/event-stream");
    let (replayed_text, replayed_usage) = openai_stream_text(&events);
    assert_eq!(replayed_text, live_text);
    // The same counts (the upstream's own chunk names more zero details).
    let counts = |usage: &Option<Value>| {
        let u = usage.clone().unwrap_or_else(|| panic!("include_usage gets a usage chunk"));
        (u["prompt_tokens"].clone(), u["completion_tokens"].clone(), u["total_tokens"].clone())
    };
    assert_eq!(counts(&replayed_usage), counts(&live_usage));
    // The same request without streaming gets the stored answer whole.
    body["stream"] = json!(false);
    body.as_object_mut().unwrap().remove("stream_options");
    let (_, headers, complete) =
        json_of(post(&app, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "hit");
    assert_eq!(complete["choices"][0]["message"]["content"], live_text);
    assert_eq!(chat_calls(&app), 1);

    // Anthropic: a streamed miss, then a replayed hit with every event in order.
    let anthropic = json!({
        "model": "claude", "max_tokens": 64, "temperature": 0, "stream": true,
        "messages": [{"role": "user", "content": "Stream it."}]
    });
    let (_, headers, live) = app.post_sse("/v1/messages", &anthropic).await;
    assert_eq!(cache_header(&headers), "miss");
    let (_, headers, replayed) = app.post_sse("/v1/messages", &anthropic).await;
    assert_eq!(cache_header(&headers), "hit");
    let text = |events: &[floodgate_protocol::sse::SseEvent]| {
        let mut text = String::new();
        for event in events {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.event.as_deref(), data["type"].as_str(), "event name = data type");
            if data["delta"]["type"] == "text_delta" {
                text.push_str(data["delta"]["text"].as_str().unwrap());
            }
        }
        text
    };
    assert_eq!(text(&replayed), text(&live));
    let names: Vec<&str> = replayed.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = replayed
        .iter()
        .find(|e| e.event.as_deref() == Some("message_delta"))
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0, "{delta}");
    let anthropic_calls =
        app.upstream_requests().iter().filter(|r| r.path.ends_with("/messages")).count();
    assert_eq!(anthropic_calls, 1);
}

#[tokio::test]
async fn a_hundred_identical_requests_at_once_make_one_upstream_call() {
    let app =
        spawn("", MockConfig { latency: Duration::from_millis(400), ..MockConfig::default() })
            .await;
    let body = question("Thundering herd?");
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push((i, spawn_chat(&app, &body)));
    }
    // A fifth of the clients give up while the call is in flight.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut answers = Vec::new();
    for (i, task) in tasks {
        if i % 5 == 0 {
            task.abort();
        } else {
            answers.push(task.await.unwrap());
        }
    }
    assert_eq!(answers.len(), 80);
    assert!(answers.iter().all(|(status, _, _)| *status == StatusCode::OK));
    assert!(
        answers.iter().all(|(_, _, body)| *body == answers[0].2),
        "every waiter gets the answer"
    );
    let misses = answers.iter().filter(|(_, cache, _)| cache == "miss").count();
    let coalesced = answers.iter().filter(|(_, cache, _)| cache == "coalesced").count();
    // The leader may be one of the clients that left.
    assert!(misses <= 1 && misses + coalesced == 80, "{misses} misses, {coalesced} coalesced");
    assert_eq!(chat_calls(&app), 1);
    let (_, headers, _) = json_of(post(&app, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "hit");
    assert_eq!(chat_calls(&app), 1);
    // Every request is in the ledger: the call once, at its cost; every other
    // as a hit, or as a 499 if the gateway saw its client leave first (over
    // HTTP/1.1 it mostly does not: the answer is written to a closed socket).
    app.ledger_after(101).await;
    let query = floodgate_core::store::UsageQuery {
        from_ms: None,
        to_ms: None,
        group_by: Vec::new(),
        key_id: None,
    };
    let report = app.state.store.usage_report(&query).await.unwrap();
    let row = &report[0];
    assert_eq!((row.requests, row.errors + row.cache_hits), (101, 100), "{report:?}");
    assert!(row.errors <= 20, "{report:?}");
}

#[tokio::test]
async fn streamed_and_complete_requests_in_flight_share_one_call() {
    let app =
        spawn("", MockConfig { latency: Duration::from_millis(300), ..MockConfig::default() })
            .await;
    let complete = question("Both ways at once?");
    let mut streamed = complete.clone();
    streamed["stream"] = json!(true);
    let mut tasks = Vec::new();
    for body in [complete.clone(), streamed.clone(), complete.clone(), streamed.clone()] {
        tasks.push(spawn_chat(&app, &body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert!(results.iter().all(|(status, _, _)| *status == StatusCode::OK));
    let caches: Vec<&str> = results.iter().map(|(_, cache, _)| cache.as_str()).collect();
    // One call (the first request's, complete) answers the streams too.
    assert_eq!(caches, ["miss", "coalesced", "coalesced", "coalesced"]);
    let whole: Value = serde_json::from_slice(&results[0].2).unwrap();
    let (text, _) = openai_stream_text(&parse_sse(&results[1].2));
    assert_eq!(whole["choices"][0]["message"]["content"], text);
    assert_eq!(chat_calls(&app), 1);

    // And the other way: a streamed call answers complete requests.
    let mut streamed = question("The other way round?");
    streamed["stream"] = json!(true);
    let mut complete = streamed.clone();
    complete["stream"] = json!(false);
    let mut tasks = Vec::new();
    for body in [streamed, complete.clone(), complete] {
        tasks.push(spawn_chat(&app, &body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let caches: Vec<&str> = results.iter().map(|(_, cache, _)| cache.as_str()).collect();
    assert_eq!(caches, ["miss", "coalesced", "coalesced"]);
    let (text, _) = openai_stream_text(&parse_sse(&results[0].2));
    let whole: Value = serde_json::from_slice(&results[1].2).unwrap();
    assert_eq!(whole["object"], "chat.completion", "{whole}");
    assert_eq!(whole["choices"][0]["message"]["content"], text);
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{whole}");
    assert_eq!(chat_calls(&app), 2);
}

#[tokio::test]
async fn streamed_waiters_each_get_the_whole_stream_and_leaving_cancels_only_at_the_end() {
    let mock =
        MockConfig { chunks: 8, chunk_delay: Duration::from_millis(60), ..MockConfig::default() };
    let app = spawn("", mock).await;
    let mut body = question("Stream to many.");
    body["stream"] = json!(true);
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push((i, spawn_chat(&app, &body)));
        // Later waiters join mid-stream.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut streams = Vec::new();
    for (i, task) in tasks {
        if i % 4 == 0 { task.abort() } else { streams.push(task.await.unwrap()) }
    }
    let texts: Vec<String> =
        streams.iter().map(|(_, _, bytes)| openai_stream_text(&parse_sse(bytes)).0).collect();
    assert_eq!(texts.len(), 15);
    assert!(!texts[0].is_empty() && texts.iter().all(|t| *t == texts[0]), "{texts:?}");
    assert_eq!(chat_calls(&app), 1);
    assert_eq!(app.mock.stats().streams_completed, 1);

    // Every waiter of a new call leaves: the call is cancelled upstream.
    body["messages"][1]["content"] = json!("Nobody waits for this.");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(spawn_chat(&app, &body));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    tasks.iter().for_each(|t| t.abort());
    eventually(|| async { app.mock.stats().streams_cancelled == 1 }).await;
    assert!(app.metrics().await.contains("floodgate_cache_flights_cancelled_total 1"));
    assert_eq!(chat_calls(&app), 2);
}

#[tokio::test]
async fn semantic_cache_serves_near_identical_prompts_above_the_threshold() {
    let config = DEFAULT_CONFIG.replace(
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]",
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]\n[models.cache.semantic]\nembedding_model = \"embed\"\nthreshold = 0.95",
    );
    let app = spawn_with(Options {
        config: format!("{config}\n[cache]\nenabled = true\n"),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await;
    let ask = |text: &'static str| {
        let app = &app;
        async move { json_of(post(app, "/v1/chat/completions", &question(text), &[]).await).await }
    };
    let (_, headers, first) = ask("What is the capital of France?").await;
    assert_eq!(cache_header(&headers), "miss");
    // The mock embeds words case-insensitively: the same words are similarity 1.
    let (status, headers, second) = ask("what is the capital of France?").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_header(&headers), "semantic-hit");
    let similarity: f32 =
        headers["x-floodgate-cache-similarity"].to_str().unwrap().parse().unwrap();
    assert!(similarity >= 0.95, "{similarity}");
    assert_eq!(second, first);
    // One word of six changed is well below 0.95: a miss.
    let (_, headers, _) = ask("What is the capital of Spain?").await;
    assert_eq!(cache_header(&headers), "miss");
    assert_eq!(chat_calls(&app), 2);
    // Another system prompt is another context, however close the question.
    let mut other = question("what is the capital of France?");
    other["messages"][0]["content"] = json!("You answer at length.");
    let (_, headers, _) = json_of(post(&app, "/v1/chat/completions", &other, &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    let (_, _, view) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
    assert_eq!(view["models"]["gpt"]["semantic_hit"], 1, "{view}");
    assert_eq!(view["semantic"]["entries"], 3, "{view}");
    // Each lookup's embedding call is in the ledger, as the request's own.
    app.ledger_after(8).await;
    let (_, _, usage) =
        json_of(app.send_as(Some(MASTER), Method::GET, "/admin/usage?group_by=model", None).await)
            .await;
    let rows = usage["rows"].as_array().unwrap();
    let embed = rows.iter().find(|r| r["model"] == "embed").unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(embed["requests"], 4, "{usage}");
}

#[tokio::test]
async fn identical_requests_in_flight_share_the_semantic_cache_embedding_call_too() {
    let config = DEFAULT_CONFIG.replace(
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]",
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]\n[models.cache.semantic]\nembedding_model = \"embed\"",
    );
    let app = spawn_with(Options {
        config: format!("{config}\n[cache]\nenabled = true\n"),
        mock: MockConfig {
            record: true,
            latency: Duration::from_millis(200),
            ..MockConfig::default()
        },
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    })
    .await;
    let calls =
        |path: &str| app.upstream_requests().iter().filter(|r| r.path.ends_with(path)).count();
    let herd = |text: &'static str, stream: bool| {
        let app = &app;
        async move {
            let mut body = question(text);
            body["stream"] = json!(stream);
            let mut tasks = Vec::new();
            for _ in 0..20 {
                tasks.push(spawn_chat(app, &body));
            }
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        }
    };
    let results = herd("Where is the Louvre?", false).await;
    assert!(results.iter().all(|(status, _, _)| *status == StatusCode::OK));
    assert_eq!(
        (calls("/embeddings"), chat_calls(&app)),
        (1, 1),
        "one embedding call, one chat call"
    );
    // A herd of near-identical prompts: one embedding call, a semantic hit for
    // the one that made it, its share for the others; no chat call.
    for stream in [false, true] {
        let results = herd("where is the louvre?", stream).await;
        let caches: Vec<&str> = results.iter().map(|(_, cache, _)| cache.as_str()).collect();
        assert_eq!(caches.iter().filter(|c| **c == "semantic-hit").count(), 1, "{caches:?}");
        assert_eq!(caches.iter().filter(|c| **c == "coalesced").count(), 19, "{caches:?}");
        if stream {
            let (text, _) = openai_stream_text(&parse_sse(&results[0].2));
            assert!(!text.is_empty());
        }
    }
    assert_eq!((calls("/embeddings"), chat_calls(&app)), (3, 1));
}

#[tokio::test]
async fn admin_warm_fills_the_cache_and_clear_empties_it() {
    let app = spawn("", MockConfig::default()).await;
    let admin = |method: Method, path: &'static str, body: Option<Value>| {
        let app = &app;
        async move { json_of(app.send_as(Some(MASTER), method, path, body.as_ref()).await).await }
    };
    let warm = json!({"requests": [
        {"body": question("Warm one")},
        {"route": "messages", "body": {"model": "claude", "max_tokens": 32, "temperature": 0,
            "messages": [{"role": "user", "content": "Warm two"}]}},
        {"body": {"model": "gpt", "messages": [{"role": "user", "content": "sampled"}]}},
    ]});
    let (status, _, report) = admin(Method::POST, "/admin/cache/warm", Some(warm.clone())).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["stored"].as_u64(), report["not_cacheable"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    let (_, _, again) = admin(Method::POST, "/admin/cache/warm", Some(warm)).await;
    assert_eq!(again["cached"], 2, "{again}");
    let upstream = app.upstream_requests().len();
    let mut streamed = question("Warm one");
    streamed["stream"] = json!(true);
    let (status, headers, events) = app.post_sse("/v1/chat/completions", &streamed).await;
    assert_eq!((status, cache_header(&headers)), (StatusCode::OK, "hit"));
    assert!(!openai_stream_text(&events).0.is_empty());
    assert_eq!(app.upstream_requests().len(), upstream);

    let (status, _, error) =
        admin(Method::POST, "/admin/cache/clear", Some(json!({"model": "nope"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error["error"]["message"].as_str().unwrap().contains("gpt"), "{error}");
    let (status, _, error) =
        admin(Method::POST, "/admin/cache/clear", Some(json!({"alias": "gpt"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["error"]["message"].as_str().unwrap().contains("model"), "{error}");
    let (status, _, cleared) =
        admin(Method::POST, "/admin/cache/clear", Some(json!({"model": "gpt"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cleared["cleared"]["l1"], 1, "{cleared}");
    let (_, headers, _) =
        json_of(post(&app, "/v1/chat/completions", &question("Warm one"), &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    let (status, _, _) = admin(Method::POST, "/admin/cache/clear", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, view) = admin(Method::GET, "/admin/cache", None).await;
    assert_eq!(view["l1"]["entries"], 0, "{view}");
    // Client keys cannot reach the admin routes.
    let response = app.send_as(Some("fg-not-a-key"), Method::GET, "/admin/cache", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn answers_are_per_key_unless_the_alias_shares_them() {
    let app = spawn("", MockConfig::default()).await;
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let (_, _, created) = json_of(
            app.send_as(Some(MASTER), Method::POST, "/admin/keys", Some(&json!({"name": name})))
                .await,
        )
        .await;
        keys.push(created["key"].as_str().unwrap().to_string());
    }
    let ask = |key: &str| {
        let (app, key) = (&app, key.to_string());
        async move {
            let response = app
                .send_as(
                    Some(&key),
                    Method::POST,
                    "/v1/chat/completions",
                    Some(&question("Per key?")),
                )
                .await;
            cache_header(response.headers()).to_string()
        }
    };
    assert_eq!(ask(&keys[0]).await, "miss");
    assert_eq!(ask(&keys[0]).await, "hit");
    assert_eq!(ask(&keys[1]).await, "miss", "another key does not see the first key's answers");
    assert_eq!(chat_calls(&app), 2);
}

#[tokio::test]
async fn embeddings_are_cached_too() {
    let app = spawn("[cache.route_ttl_seconds]\nembeddings = 86400", MockConfig::default()).await;
    let body = json!({"model": "embed", "input": ["one", "two"]});
    let (_, headers, first) = json_of(post(&app, "/v1/embeddings", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    let (_, headers, second) = json_of(post(&app, "/v1/embeddings", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "hit");
    assert_eq!(first, second);
    let calls = app.upstream_requests().iter().filter(|r| r.path.ends_with("/embeddings")).count();
    assert_eq!(calls, 1);
}

#[expect(clippy::print_stderr, reason = "a skipped test says why")]
fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("FLOODGATE_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped {test}: FLOODGATE_TEST_REDIS_URL not set");
    }
    url
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_answers_in_l2_and_clears() {
    let Some(redis) = redis_url("two_nodes_on_one_redis_share_answers_in_l2_and_clears") else {
        return;
    };
    let prefix = format!("fgtest{:x}:", crate::helpers::fastrand_u64());
    let state = format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n"
    );
    let a = spawn(&state, MockConfig::default()).await;
    let b = spawn(&state, MockConfig::default()).await;
    let body = question("Shared between nodes?");
    let (_, headers, first) = json_of(post(&a, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    // The L2 write is in the background: B sees it shortly.
    eventually(|| async {
        let response = post(&b, "/v1/chat/completions", &body, &[]).await;
        cache_header(response.headers()) == "hit"
    })
    .await;
    let (_, headers, second) = json_of(post(&b, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(headers["x-floodgate-cache-layer"], "l1", "an L2 hit filled B's L1");
    assert_eq!(second, first);
    assert_eq!(chat_calls(&b), 0, "B never called its upstream");
    // A clear on A empties B's L1 too (over pub/sub) and Redis.
    let (status, _, cleared) = json_of(
        a.send_as(Some(MASTER), Method::POST, "/admin/cache/clear", Some(&json!({"model": "gpt"})))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["cleared"]["l2"], 1, "{cleared}");
    eventually(|| async {
        let (_, _, view) =
            json_of(b.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
        view["l1"]["entries"] == 0
    })
    .await;
    let (_, headers, _) = json_of(post(&b, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(cache_header(&headers), "miss");
    let (_, _, ready) = json_of(b.get("/health/ready").await).await;
    assert_eq!(ready["components"]["cache"]["layers"], "l1+l2", "{ready}");
}

#[tokio::test]
async fn requests_succeed_while_redis_is_down_and_the_node_says_so() {
    let Some(redis) = redis_url("requests_succeed_while_redis_is_down_and_the_node_says_so") else {
        return;
    };
    let target = redis.trim_start_matches("redis://").split('/').next().unwrap().to_string();
    use std::net::ToSocketAddrs;
    let proxy = TcpProxy::start(target.to_socket_addrs().unwrap().next().unwrap()).await;
    let prefix = format!("fgtest{:x}:", crate::helpers::fastrand_u64());
    let app = spawn(
        &format!("l2_timeout = \"100ms\"\n[state]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\nredis_prefix = \"{prefix}\"\n", proxy.addr),
        MockConfig::default(),
    )
    .await;
    let body = question("Redis down?");
    assert_eq!(
        cache_header(post(&app, "/v1/chat/completions", &body, &[]).await.headers()),
        "miss"
    );
    proxy.hang();
    let other = question("Another while Redis hangs");
    let started = std::time::Instant::now();
    for expected in ["miss", "hit"] {
        let response = post(&app, "/v1/chat/completions", &other, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(cache_header(response.headers()), expected);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an unanswering Redis costs at most its timeout"
    );
    let (status, _, ready) = json_of(app.get("/health/ready").await).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["components"]["cache"]["status"], "degraded", "{ready}");
    assert!(app.metrics().await.contains("floodgate_cache_l2_degraded 1"));
    proxy.restore();
    eventually(|| async {
        let (_, _, ready) = json_of(app.get("/health/ready").await).await;
        ready["components"]["cache"]["status"] == "ok"
    })
    .await;
}

#[tokio::test]
async fn a_node_started_later_on_the_same_redis_has_the_semantic_index_warm() {
    let Some(redis) =
        redis_url("a_node_started_later_on_the_same_redis_has_the_semantic_index_warm")
    else {
        return;
    };
    let prefix = format!("fgtest{:x}:", crate::helpers::fastrand_u64());
    let config = DEFAULT_CONFIG.replace(
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]",
        "name = \"gpt\"\ntargets = [\"oai/gpt-4o-mini\"]\n[models.cache.semantic]\nembedding_model = \"embed\"",
    );
    let node = || Options {
        config: format!(
            "{config}\n[cache]\nenabled = true\n[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nredis_prefix = \"{prefix}\"\n"
        ),
        master_key: Some(MASTER.to_string()),
        ..Options::default()
    };
    let a = spawn_with(node()).await;
    let (_, headers, first) = json_of(
        post(&a, "/v1/chat/completions", &question("Which river runs through Paris?"), &[]).await,
    )
    .await;
    assert_eq!(cache_header(&headers), "miss");
    // The vector and the answer reach Redis in the background.
    eventually(|| async {
        let (_, _, view) =
            json_of(a.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
        view["semantic"]["entries"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = spawn_with(node()).await;
    let (_, _, view) =
        json_of(b.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
    assert_eq!(view["semantic"]["entries"], 1, "B loaded A's vectors at start: {view}");
    let (status, headers, second) = json_of(
        post(&b, "/v1/chat/completions", &question("which river runs through paris?"), &[]).await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache_header(&headers), "semantic-hit");
    assert_eq!(headers["x-floodgate-cache-layer"], "l2");
    assert_eq!(second, first);
    assert_eq!(chat_calls(&b), 0);
    // A clear of the alias empties the vectors in Redis too.
    let (status, _, cleared) = json_of(
        b.send_as(Some(MASTER), Method::POST, "/admin/cache/clear", Some(&json!({"model": "gpt"})))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["cleared"]["semantic"], 1, "{cleared}");
    let c = spawn_with(node()).await;
    let (_, _, view) =
        json_of(c.send_as(Some(MASTER), Method::GET, "/admin/cache", None).await).await;
    assert_eq!(view["semantic"]["entries"], 0, "{view}");
}
