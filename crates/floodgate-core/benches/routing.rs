//! The cost of one routing decision (rules, strategy order, breakers, key
//! pick with its reservation) with 100 keys on each of 4 providers and 20
//! targets, the "100 keys × 20 targets" case. Run with
//! `cargo bench -p floodgate-core --bench routing`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_core::alerts::Alerts;
use floodgate_core::config::{Env, Overrides, from_text};
use floodgate_core::providers::Provider;
use floodgate_core::routing::Router;
use floodgate_core::routing::wait::CapacitySignal;
use floodgate_core::secrets::Scrubber;
use floodgate_core::state::MemoryState;
use floodgate_protocol::{ChatRequest, Message, Role};

const PROVIDERS: usize = 4;
const KEYS: usize = 100;
const TARGETS: usize = 20;

fn config(strategy: &str) -> String {
    let mut text = String::new();
    for p in 0..PROVIDERS {
        let _ = write!(
            text,
            "[[providers]]\nname = \"p{p}\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             rpm = 1000000000\ntpm = 2000000000\nkeys = ["
        );
        // One priority for all: every pick ranks all 100 keys.
        for k in 0..KEYS {
            let _ = write!(text, "\"p{p}-key-{k:03}\",");
        }
        text.push_str("]\n\n");
    }
    let targets: Vec<String> =
        (0..TARGETS).map(|t| format!("\"p{}/model-{t}\"", t % PROVIDERS)).collect();
    let _ = write!(
        text,
        "[[models]]\nname = \"chat\"\nstrategy = \"{strategy}\"\ntargets = [{}]\n\n\
         [[models.rules]]\nmax_prompt_tokens = 10\ntools = true\ntargets = [\"p0/never\"]\n",
        targets.join(", ")
    );
    text
}

fn router(strategy: &str) -> Router {
    let config = from_text(&config(strategy), "bench.toml", &Env::new(), &Overrides::default())
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    let signal = CapacitySignal::new();
    let alerts = Alerts::log_only(config.alerts.thresholds.clone());
    let providers = config
        .providers
        .iter()
        .map(|p| {
            let base = p.base_url.clone().unwrap_or_default();
            Arc::new(
                Provider::new(
                    p,
                    base,
                    1,
                    Arc::new(Scrubber::default()),
                    alerts.clone(),
                    signal.clone(),
                )
                .unwrap_or_else(|e| panic!("provider: {e}")),
            )
        })
        .collect();
    Router::new(&config, providers, Arc::new(MemoryState::default()), signal)
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "chat".into(),
        messages: vec![
            Message::text(Role::System, "You are a helpful assistant who answers briefly."),
            Message::text(Role::User, "What is the capital of France? Answer in one word."),
        ],
        max_tokens: Some(64),
        ..ChatRequest::default()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _guard = runtime.enter();
    let req = request();
    for strategy in ["fallback", "least-latency", "weighted", "least-busy"] {
        let router = router(strategy);
        let route = router.resolve("chat").unwrap_or_else(|e| panic!("{e}"));
        assert!(router.decide(&route, &req).is_some(), "a target takes the request");
        c.bench_function(&format!("decide/{strategy}/100x4 keys/20 targets"), |b| {
            b.iter(|| black_box(router.decide(black_box(&route), black_box(&req))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
