use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_text(text: &str, env: &Env) -> Result<Config, ConfigError> {
    from_text(text, "floodgate.toml", env, &Overrides::default())
}

fn problems(text: &str, env: &Env) -> Vec<Problem> {
    match load_text(text, env) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

/// DESIGN.md §5, verbatim.
const DESIGN_SECTION_5: &str = r#"
listen = "127.0.0.1:8080"
master_key = "${FLOODGATE_MASTER_KEY}"   # set: admin API on, client keys required

[state]
backend = "memory"                       # or "redis"
redis_url = "redis://127.0.0.1:6379"

[database]
url = "sqlite://floodgate.db"            # or postgres://…

[[providers]]
name = "openai"
kind = "openai"                          # openai | anthropic | gemini | openai-compatible | mock
base_url = "https://api.openai.com/v1"
keys = ["${OPENAI_API_KEY}", "${OPENAI_API_KEY_2}"]
rpm = 3500                               # per key
tpm = 160000                             # per key

[[models]]
name = "chat"                            # what clients send as "model"
targets = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]   # in fallback order

[cache]
enabled = true
ttl_seconds = 3600

[[pricing]]                              # overrides/extends the built-in price table
model = "gpt-4o-mini"                    # upstream model name
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
"#;

/// Every problem §5 verbatim has here, each with its line: the anthropic
/// provider its model names is not defined in the excerpt, and the cache is
/// not in this version. Nothing else.
#[test]
fn design_section_5_verbatim_reports_only_what_is_missing() {
    let env = env(&[
        ("FLOODGATE_MASTER_KEY", "master-key-0123456789abcdef"),
        ("OPENAI_API_KEY", "sk-one"),
        ("OPENAI_API_KEY_2", "sk-two"),
    ]);
    let problems = problems(DESIGN_SECTION_5, &env);
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(22), Some(24)], "{problems:#?}");
    assert!(problems[0].message.contains("\"anthropic\", which is not defined"));
    assert!(problems[1].message.contains("the response cache is not available in this version"));
}

/// DESIGN.md §5 completed: the provider its model names, and the cache
/// section off.
const DESIGN_EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"
master_key = "${FLOODGATE_MASTER_KEY}"   # set: admin API on, client keys required

[state]
backend = "memory"                       # or "redis"
redis_url = "redis://127.0.0.1:6379"

[database]
url = "sqlite://floodgate.db"            # or postgres://…

[[providers]]
name = "openai"
kind = "openai"                          # openai | anthropic | gemini | openai-compatible | mock
base_url = "https://api.openai.com/v1"
keys = ["${OPENAI_API_KEY}", "${OPENAI_API_KEY_2:-}"]
rpm = 3500                               # per key
tpm = 160000                             # per key

[[providers]]
name = "anthropic"
kind = "anthropic"
keys = ["${ANTHROPIC_API_KEY}"]

[[models]]
name = "chat"                            # what clients send as "model"
targets = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]   # in fallback order

[cache]
enabled = false
ttl_seconds = 3600

[[pricing]]                              # overrides/extends the built-in price table
model = "gpt-4o-mini"                    # upstream model name
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
"#;

#[test]
fn design_example_parses_with_env_substitution() {
    let env = env(&[
        ("FLOODGATE_MASTER_KEY", "master-key-0123456789abcdef"),
        ("OPENAI_API_KEY", "sk-one"),
        ("ANTHROPIC_API_KEY", "sk-ant"),
    ]);
    let config = load_text(DESIGN_EXAMPLE, &env).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.master_key.unwrap().expose_secret(), "master-key-0123456789abcdef");
    assert_eq!(config.providers.len(), 2);
    let openai = &config.providers[0];
    assert_eq!(openai.kind, ProviderKind::Openai);
    // The unset optional second key is skipped, not sent as "".
    assert_eq!(openai.keys.len(), 1);
    assert_eq!(openai.rpm, Some(3500));
    assert_eq!(openai.base_url.as_deref(), Some("https://api.openai.com/v1"));
    assert_eq!(config.providers[1].base_url.as_deref(), Some("https://api.anthropic.com"));
    assert_eq!(
        config.models[0].targets[1],
        TargetRef { provider: "anthropic".into(), model: "claude-3-5-haiku-latest".into() }
    );
    assert!(!config.routing.allow_direct_targets);
    assert_eq!(config.pricing[0].model, "gpt-4o-mini");
}

#[test]
fn no_file_and_no_keys_gives_the_mock() {
    let config = Config::defaults(&Env::new()).unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.providers.len(), 1);
    assert_eq!(config.providers[0].kind, ProviderKind::Mock);
    assert_eq!(config.providers[0].base_url, None);
    assert_eq!(config.models[0].name, "mock");
    assert!(config.master_key.is_none());
    assert_eq!(config.database.url, "sqlite://floodgate.db");
    assert!(config.routing.allow_direct_targets);
}

#[test]
fn no_file_takes_providers_from_the_environment() {
    let config =
        Config::defaults(&env(&[("OPENAI_API_KEY", "sk-a"), ("GEMINI_API_KEY", "g-b")])).unwrap();
    let kinds: Vec<_> = config.providers.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProviderKind::Openai, ProviderKind::Gemini]);
    let aliases: Vec<_> = config.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(aliases, ["gpt-4o-mini", "gemini-2.5-flash"]);
}

#[test]
fn env_and_cli_override_the_file() {
    let text = "listen = \"127.0.0.1:9000\"\n";
    let config = load_text(text, &env(&[("FLOODGATE_LISTEN", "127.0.0.1:9001")])).unwrap();
    assert_eq!(config.listen.port(), 9001);
    let overrides =
        Overrides { listen: Some("127.0.0.1:9002".parse().unwrap()), ..Overrides::default() };
    let config =
        from_text(text, "f", &env(&[("FLOODGATE_LISTEN", "127.0.0.1:9001")]), &overrides).unwrap();
    assert_eq!(config.listen.port(), 9002);
}

#[test]
fn syntax_error_names_the_line() {
    let problems =
        problems("listen = \"127.0.0.1:8080\"\n[state\nbackend = \"memory\"\n", &Env::new());
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(2));
    assert!(problems[0].to_string().starts_with("floodgate.toml:2: "), "{}", problems[0]);
}

#[test]
fn unknown_field_names_the_line_and_the_valid_ones() {
    let problems = problems("listen = \"127.0.0.1:8080\"\n\n[server]\nmax_body = 5\n", &Env::new());
    assert_eq!(problems[0].line, Some(4));
    assert!(problems[0].message.contains("unknown field `max_body`"), "{}", problems[0].message);
    assert!(problems[0].message.contains("max_body_bytes"), "{}", problems[0].message);
}

#[test]
fn bad_enum_value_lists_the_valid_ones() {
    let text = "[[providers]]\nname = \"x\"\nkind = \"openia\"\nkeys = [\"k\"]\n";
    let problems = problems(text, &Env::new());
    assert_eq!(problems[0].line, Some(3));
    for kind in ["openai", "openai-compatible", "anthropic", "gemini", "mock"] {
        assert!(problems[0].message.contains(kind), "{}", problems[0].message);
    }
}

#[test]
fn bad_values_say_what_is_expected() {
    let p = problems("listen = \"localhost\"\n", &Env::new());
    assert_eq!(p[0].line, Some(1));
    assert!(p[0].message.contains("IP:PORT"), "{}", p[0].message);
    let p = problems("[upstream]\nconnect_timeout = \"5 parsecs\"\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("\"30s\""), "{}", p[0].message);
}

#[test]
fn semantic_problems_are_all_reported_with_lines() {
    let text = r#"
[[providers]]
name = "openai"
kind = "openai"
keys = []

[[providers]]
name = "local"
kind = "openai-compatible"

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
keys = ["k"]

[[models]]
name = "chat"
targets = ["opneai/gpt-4o-mini", "nomodel", "claude/"]

[[models]]
name = "chat"
targets = ["local/x"]
"#;
    let problems = problems(text, &Env::new());
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        [Some(3), Some(9), Some(14), Some(19), Some(19), Some(19), Some(22)],
        "{problems:#?}"
    );
    assert!(problems[0].message.contains("has no keys"));
    assert!(problems[1].message.contains("needs base_url"));
    assert!(problems[2].message.contains("do not include it"));
    assert!(problems[3].message.contains("\"opneai\", which is not defined"));
    assert!(problems[4].message.contains("is not \"provider/model\""));
    assert!(problems[6].message.contains("defined twice"));
}

#[test]
fn missing_env_var_names_the_line() {
    let text = "[[providers]]\nname = \"o\"\nkind = \"openai\"\nkeys = [\"${OPENAI_API_KEY}\"]\n";
    let problems = problems(text, &Env::new());
    assert_eq!(problems[0].line, Some(4));
    assert!(problems[0].message.contains("OPENAI_API_KEY is not set"));
}

#[test]
fn features_of_later_versions_are_refused_clearly() {
    let p = problems("[state]\nbackend = \"redis\"\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("valid: \"memory\""));
    let p = problems("[database]\nurl = \"postgres://localhost/db\"\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    let p = problems("[cache]\nenabled = true\n", &Env::new());
    assert!(p[0].message.contains("not available in this version"));
}

#[test]
fn short_master_key_is_refused() {
    let p = problems("master_key = \"short\"\n", &Env::new());
    assert_eq!(p[0].line, Some(1));
    let config = load_text("master_key = \"${K:-}\"\n", &Env::new()).unwrap();
    assert!(config.master_key.is_none());
}

#[test]
fn timeouts_and_routing_take_defaults_and_overrides() {
    let text = r#"
[upstream]
connect_timeout = "2s"

[routing]
retries = 0
backoff_base = "10ms"

[[providers]]
name = "m"
kind = "mock"
first_byte_timeout = "7s"

[[models]]
name = "x"
targets = ["m/x"]
retries = 4
"#;
    let config = load_text(text, &Env::new()).unwrap();
    let t = config.providers[0].timeouts;
    assert_eq!(t.connect, Duration::from_secs(2));
    assert_eq!(t.first_byte, Duration::from_secs(7));
    assert_eq!(t.total, Duration::from_secs(600));
    assert_eq!(config.routing.retries, 0);
    assert_eq!(config.routing.backoff_base, Duration::from_millis(10));
    assert_eq!(config.models[0].retries, Some(4));
}

#[test]
fn server_limits_of_zero_are_refused_with_their_lines_and_defaults_follow_the_files_limit() {
    let text = "[server]\nworkers = 0\nmax_in_flight = 0\nmax_connections = 0\n";
    let problems = problems(text, &Env::new());
    let found: Vec<_> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(
        found,
        [
            (Some(2), "server.workers must be at least 1"),
            (Some(3), "server.max_in_flight must be at least 1"),
            (Some(4), "server.max_connections must be at least 1"),
        ]
    );
    let config = load_text("[server]\nmax_connections = 15000\n", &Env::new()).unwrap();
    assert_eq!(config.server.max_connections, 15000);
    let config = load_text("", &Env::new()).unwrap();
    assert_eq!(config.server.max_connections, crate::pipeline::shed::default_max_in_flight());
}
