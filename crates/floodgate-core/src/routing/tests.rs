use std::sync::Arc;

use super::*;
use crate::config::{Env, Overrides, from_text};
use crate::providers::ErrorKind;
use crate::secrets::Scrubber;
use crate::state::MemoryState;

fn router(text: &str) -> Router {
    let config = from_text(text, "t.toml", &Env::new(), &Overrides::default()).unwrap();
    let signal = wait::CapacitySignal::new();
    let providers = config
        .providers
        .iter()
        .map(|p| {
            Arc::new(
                Provider::new(
                    p,
                    "http://127.0.0.1:9".into(),
                    1,
                    Arc::new(Scrubber::default()),
                    crate::alerts::Alerts::log_only(Vec::new()),
                    signal.clone(),
                )
                .unwrap(),
            )
        })
        .collect();
    Router::new(&config, providers, Arc::new(MemoryState::default()), signal)
}

const CONFIG: &str = r#"
[[providers]]
name = "local"
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "chat"
targets = ["local/a", "local/org/b"]
retries = 5
"#;

#[test]
fn aliases_resolve_to_their_targets_in_order() {
    let router = router(CONFIG);
    let route = router.resolve("chat").unwrap();
    let labels: Vec<&str> = route.targets().iter().map(Target::label).collect();
    assert_eq!(labels, ["local/a", "local/org/b"]);
    assert_eq!(route.alias.policy.retries, 5);
    assert_eq!(router.model_names(), ["chat"]);
}

#[test]
fn direct_targets_only_when_allowed() {
    assert!(matches!(router(CONFIG).resolve("local/x"), Err(RouteError::UnknownModel { .. })));
    let allowed = format!("[routing]\nallow_direct_targets = true\n{CONFIG}");
    let router = router(&allowed);
    let route = router.resolve("local/meta-llama/Llama-3").unwrap();
    assert_eq!(route.targets()[0].model, "meta-llama/Llama-3");
    assert!(matches!(router.resolve("nope/x"), Err(RouteError::UnknownModel { .. })));
    assert!(matches!(router.resolve("local/"), Err(RouteError::UnknownModel { .. })));
}

#[test]
fn exhausted_error_names_every_target_tried() {
    let error = RouteError::Exhausted {
        model: "chat".into(),
        failures: vec![
            TargetFailure {
                target: "a/x".into(),
                attempts: 3,
                error: ProviderError::new(ErrorKind::Status(500), "a answered 500: boom"),
            },
            TargetFailure {
                target: "b/y".into(),
                attempts: 1,
                error: ProviderError::new(ErrorKind::Connect, "b: cannot connect"),
            },
        ],
        budget_spent: false,
    };
    assert_eq!(
        error.to_string(),
        "every target for model \"chat\" failed (2 tried): a/x (3 attempts): a answered 500: boom; b/y (1 attempt): b: cannot connect"
    );
}
