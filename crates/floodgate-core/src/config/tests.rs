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

/// Every problem §5 verbatim has here, with its line: the anthropic
/// provider its model names is not defined in the excerpt. Nothing else.
#[test]
fn design_section_5_verbatim_reports_only_what_is_missing() {
    let env = env(&[
        ("FLOODGATE_MASTER_KEY", "master-key-0123456789abcdef"),
        ("OPENAI_API_KEY", "sk-one"),
        ("OPENAI_API_KEY_2", "sk-two"),
    ]);
    let problems = problems(DESIGN_SECTION_5, &env);
    let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(22)], "{problems:#?}");
    assert!(problems[0].message.contains("\"anthropic\", which is not defined"));
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
    assert_eq!(config.models[0].targets[1], TargetRef::new("anthropic", "claude-3-5-haiku-latest"));
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
    let p = problems("[database]\nurl = \"mysql://u:secret@h/db\"\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("postgres://"), "{}", p[0].message);
    assert!(!p[0].message.contains("secret"), "the password is not repeated");
}

#[test]
fn cache_settings_are_read_and_checked() {
    let text = r#"
[[providers]]
name = "p"
kind = "mock"

[[models]]
name = "chat"
targets = ["p/m"]
cache = { ttl_seconds = 60, namespace = "shared", sampled = true }

[[models]]
name = "support"
targets = ["p/m"]
[models.cache.semantic]
embedding_model = "p/embed"

[cache]
enabled = true
ttl_seconds = 120
route_ttl_seconds = { embeddings = 86400 }
max_bytes = 2097152
l2_timeout = "20ms"
"#;
    let config = load_text(text, &Env::new()).unwrap();
    let cache = &config.cache;
    assert!(cache.enabled && cache.coalesce && cache.l2 && !cache.sampled);
    assert_eq!(cache.ttl, Duration::from_secs(120));
    assert_eq!(cache.route_ttl, [("embeddings".to_string(), Duration::from_secs(86400))]);
    assert_eq!((cache.max_bytes, cache.max_entry_bytes), (2 << 20, 1 << 20));
    assert_eq!(cache.l2_timeout, Duration::from_millis(20));
    let chat = &config.models[0].cache;
    assert_eq!(chat.ttl, Some(Duration::from_secs(60)));
    assert_eq!(chat.namespace, Some(CacheNamespace::Shared));
    let semantic = config.models[1].cache.semantic.as_ref().unwrap();
    assert_eq!((semantic.embedding_model.as_str(), semantic.threshold), ("p/embed", 0.95));

    let bad = r#"
[[providers]]
name = "p"
kind = "mock"

[[models]]
name = "chat"
targets = ["p/m"]
cache = { ttl_seconds = 0, semantic = { embedding_model = "nope", threshold = 1.5 } }

[[models]]
name = "other"
targets = ["p/m"]
cache = { semantic = { embedding_model = "nope" } }
"#;
    let p = problems(bad, &Env::new());
    let text: Vec<String> = p.iter().map(|p| format!("{:?}: {}", p.line, p.message)).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("Some(9): models.cache.semantic.threshold"), "{text:#?}");
    assert!(
        has("Some(14): models.cache.semantic.embedding_model \"nope\" is neither"),
        "{text:#?}"
    );
    // namespace is refused by serde first; the file is read no further.
    let p = problems("[cache]\nnamespace = \"everyone\"\n", &Env::new());
    assert!(p[0].message.contains("key") && p[0].message.contains("shared"), "{}", p[0].message);
    let p = problems("[cache]\nroute_ttl_seconds = { chats = 5 }\nmax_bytes = 10\n", &Env::new());
    let text: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
    assert!(
        text.iter().any(|t| t.contains("unknown route \"chats\"") && t.contains("embeddings")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("cache.max_bytes must be at least")), "{text:?}");
    let p = problems(
        "[[models]]\nname = \"m\"\ntargets = [\"mock/m\"]\ncache = { ttl_seconds = 0 }\n",
        &Env::new(),
    );
    assert!(
        p.iter().any(|p| p.message.contains("models.cache.ttl_seconds must be at least 1")),
        "{p:?}"
    );
}

#[test]
fn redis_state_postgres_database_and_pool_settings_are_read() {
    let text = r#"
[state]
backend = "redis"
redis_url = "redis://10.0.0.2:6379/1"
redis_prefix = "fg:"

[database]
url = "postgres://app:pw@db:5432/floodgate"
max_connections = 20
min_connections = 2
idle_timeout = "0s"
acquire_timeout = "2s"
test_before_acquire = false
ledger_buffer = 1000
ledger_spill_path = "/var/lib/floodgate/spill"
"#;
    let config = load_text(text, &Env::new()).unwrap();
    assert_eq!(config.state.backend, StateBackendKind::Redis);
    assert_eq!(config.state.redis_prefix, "fg:");
    let pool = &config.database.pool;
    assert_eq!((pool.max_connections, pool.min_connections), (20, 2));
    assert_eq!(pool.idle_timeout, None, "0s turns it off");
    assert_eq!(pool.acquire_timeout, Duration::from_secs(2));
    assert!(!pool.test_before_acquire);
    assert_eq!(config.database.ledger_buffer, 1000);

    let p = problems("[database]\nmax_connections = 2\nmin_connections = 3\n", &Env::new());
    assert!(p[0].message.contains("must not exceed"), "{}", p[0].message);
    let p = problems("[state]\nredis_url = \"localhost:6379\"\n", &Env::new());
    assert!(p[0].message.contains("redis://"), "{}", p[0].message);
}

#[test]
fn redis_modes_are_read_and_each_wrong_key_is_named_with_its_line() {
    use crate::state::redis::Target;
    let target = |text: &str| load_text(text, &Env::new()).unwrap().state.redis;
    // A plain redis_url, or none, is one primary as before.
    assert_eq!(
        target("[state]\nredis_url = \"redis://10.0.0.2:6379/1\"\n"),
        Target::Standalone("redis://10.0.0.2:6379/1".into())
    );
    assert_eq!(target(""), Target::Standalone("redis://127.0.0.1:6379".into()));
    assert_eq!(
        target(
            "[state]\nbackend = \"redis\"\nredis_mode = \"cluster\"\n\
             redis_nodes = [\"redis://a:6379\", \"redis://:pw@b:6379\"]\n"
        ),
        Target::Cluster(vec!["redis://a:6379".into(), "redis://:pw@b:6379".into()])
    );
    assert_eq!(
        target(
            "[state]\nredis_mode = \"sentinel\"\nredis_nodes = [\"redis://s1:26379\"]\n\
             redis_sentinel_master = \"mymaster\"\n"
        ),
        Target::Sentinel { sentinels: vec!["redis://s1:26379".into()], master: "mymaster".into() }
    );

    let lines_and_words = |text: &str| -> Vec<(Option<usize>, String)> {
        problems(text, &Env::new()).into_iter().map(|p| (p.line, p.message)).collect()
    };
    let p = lines_and_words("[state]\nredis_mode = \"cluster\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, Some(2));
    assert!(p[0].1.contains("needs redis_nodes"), "{}", p[0].1);
    let p = lines_and_words(
        "[state]\nredis_mode = \"cluster\"\nredis_url = \"redis://a:6379\"\n\
         redis_nodes = [\"redis://a:6379/2\", \"a:6379\"]\nredis_prefix = \"{fg}:\"\n",
    );
    let lines: Vec<Option<usize>> = p.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [Some(4), Some(4), Some(3), Some(5)], "{p:?}");
    assert!(p[0].1.contains("only database 0"), "{}", p[0].1);
    assert!(p[1].1.contains("not a Redis URL"), "{}", p[1].1);
    assert!(p[2].1.contains("remove redis_url"), "{}", p[2].1);
    assert!(p[3].1.contains("must not contain"), "{}", p[3].1);
    let p = lines_and_words(
        "[state]\nredis_mode = \"sentinel\"\nredis_nodes = [\"redis://s:26379\"]\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].1.contains("needs redis_sentinel_master"), "{}", p[0].1);
    let p = lines_and_words(
        "[state]\nredis_nodes = [\"redis://a:6379\"]\nredis_sentinel_master = \"m\"\n",
    );
    assert_eq!(p.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [Some(2), Some(3)], "{p:?}");
    let p = lines_and_words("[state]\nredis_mode = \"ring\"\n");
    assert!(p[0].1.contains("standalone") && p[0].1.contains("sentinel"), "{}", p[0].1);
}

#[test]
fn a_read_replica_is_postgresql_only() {
    let text = "[database]\nurl = \"postgres://app@db/fg\"\nread_url = \"postgres://app@replica/fg\"\n\
                max_connections = 8\nread_max_connections = 30\n";
    let config = load_text(text, &Env::new()).unwrap();
    let read = config.database.read.unwrap();
    assert_eq!(read.url, "postgres://app@replica/fg");
    assert_eq!((read.pool.max_connections, config.database.pool.max_connections), (30, 8));
    let defaults = load_text(
        "[database]\nurl = \"postgres://app@db/fg\"\nread_url = \"postgresql://r/fg\"\n",
        &Env::new(),
    )
    .unwrap();
    assert_eq!(defaults.database.read.unwrap().pool.max_connections, 10);
    assert!(load_text("", &Env::new()).unwrap().database.read.is_none());

    let p = problems(
        "[database]\nurl = \"sqlite://fg.db\"\nread_url = \"postgres://r/fg\"\n",
        &Env::new(),
    );
    assert_eq!(p[0].line, Some(3));
    assert!(p[0].message.contains("SQLite"), "{}", p[0].message);
    // The environment's database URL is the one that counts.
    let env = env(&[("FLOODGATE_DATABASE_URL", "sqlite::memory:")]);
    let p =
        problems("[database]\nurl = \"postgres://db/fg\"\nread_url = \"postgres://r/fg\"\n", &env);
    assert!(p[0].message.contains("SQLite"), "{}", p[0].message);
    let p = problems(
        "[database]\nurl = \"postgres://db/fg\"\nread_url = \"mysql://r/fg\"\n",
        &Env::new(),
    );
    assert!(p[0].message.contains("read replica"), "{}", p[0].message);
    let p = problems("[database]\nread_max_connections = 5\n", &Env::new());
    assert!(p[0].message.contains("set read_url"), "{}", p[0].message);
}

#[test]
fn limits_and_jwt_are_read_and_checked() {
    let text = r#"
[auth.jwt]
hs256_secret = "0123456789abcdef0123456789abcdef"
audience = "floodgate"
tier_claim = "plan"

[limits]
trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]
ip = { requests = 1000, per = "15m" }
ip_ai = { requests = 10, per = "5m" }

[limits.user]
rpm = 60

[limits.tiers.pro]
rpm = 600
max_concurrent = 8
"#;
    let config = load_text(text, &Env::new()).unwrap();
    let limits = &config.limits;
    assert_eq!(limits.trusted_proxies.len(), 2);
    assert_eq!(
        limits.ip,
        Some(crate::limiter::Rate { limit: 1000, period: Duration::from_secs(900) })
    );
    assert_eq!(limits.ip_ai.unwrap().limit, 10);
    assert_eq!(limits.user.rpm, Some(60));
    assert_eq!(limits.tiers["pro"].max_concurrent, Some(8));
    let jwt = config.jwt.unwrap();
    assert_eq!(jwt.audience, vec!["floodgate".to_string()]);
    assert_eq!(jwt.tier_claim.as_deref(), Some("plan"));

    let p = problems("[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("CIDR"), "{}", p[0].message);
    let p = problems("[limits]\nip = { requests = 10 }\n", &Env::new());
    assert!(p[0].message.contains("per"), "{}", p[0].message);
    let p = problems("[auth.jwt]\naudience = \"x\"\n", &Env::new());
    assert!(p[0].message.contains("hs256_secret"), "{}", p[0].message);
    let p = problems("[auth.jwt]\nhs256_secret = \"short\"\n", &Env::new());
    assert!(p[0].message.contains("32"), "{}", p[0].message);
    let p = problems("[limits.tiers.pro]\nrpm = 5\n", &Env::new());
    assert!(p[0].message.contains("tier_claim"), "{}", p[0].message);
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

const ROUTING: &str = r#"
[routing]
retry_on = ["5xx", "timeout"]
retry_budget = 0.1
retry_budget_min_per_second = 0
retry_budget_window = "5s"

[routing.breaker]
consecutive_failures = 3
error_rate = 0.25
min_requests = 10
window = "20s"
cooldown = "2s"
half_open_probes = 2

[routing.wait]
max_wait = "2s"
max_wait_cap = "30s"
max_waiting = 50
default_priority = 3

[alerts]
thresholds = [0.5, 0.9]
webhook_url = "http://127.0.0.1:9/hook"

[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
rpm = 100
daily_tokens = 5000
keys = ["plain-key", { key = "own-key", rpm = 7, priority = 2 }, ""]

[[models]]
name = "auto"
strategy = "least-latency"
targets = ["p/strong", { target = "p/other", weight = 3 }]
retries = 1
retry_on = ["429"]
hedge = true

[[models.rules]]
max_prompt_tokens = 500
tools = false
targets = ["p/cheap"]

[[models]]
name = "hedged"
targets = ["p/a", "p/b"]
hedge_after = "250ms"
"#;

#[test]
fn routing_policies_keys_and_rules_parse() {
    let config = load_text(ROUTING, &Env::new()).unwrap();
    let r = &config.routing;
    assert_eq!(
        r.retry_on,
        RetryOn { connect: false, timeout: true, server: true, rate_limited: false }
    );
    assert_eq!(
        r.retry_budget,
        RetryBudgetConfig { ratio: 0.1, min_per_second: 0.0, window: Duration::from_secs(5) }
    );
    assert_eq!(r.breaker.consecutive_failures, 3);
    assert_eq!(r.breaker.cooldown, Duration::from_secs(2));
    assert_eq!(r.breaker.half_open_probes, 2);
    assert_eq!(r.wait.max_waiting, 50);
    assert_eq!(r.wait.default_priority, 3);
    assert_eq!(config.alerts.thresholds, [0.5, 0.9]);
    assert_eq!(config.alerts.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
    let keys = &config.providers[0].keys;
    assert_eq!(keys.len(), 2, "the empty key is skipped");
    assert_eq!((keys[0].rpm, keys[0].daily_tokens, keys[0].priority), (Some(100), Some(5000), 0));
    assert_eq!(keys[1].secret.expose_secret(), "own-key");
    assert_eq!((keys[1].rpm, keys[1].daily_tokens, keys[1].priority), (Some(7), Some(5000), 2));
    let auto = &config.models[0];
    assert_eq!(auto.strategy, Strategy::LeastLatency);
    assert_eq!(auto.targets[1], TargetRef { weight: 3, ..TargetRef::new("p", "other") });
    assert_eq!(auto.retry_on.map(|r| r.rate_limited), Some(true));
    assert_eq!(auto.hedge, Some(Hedge::P95));
    assert_eq!(auto.rules[0].max_prompt_tokens, Some(500));
    assert_eq!(auto.rules[0].tools, Some(false));
    assert_eq!(auto.rules[0].targets, [TargetRef::new("p", "cheap")]);
    assert_eq!(config.models[1].hedge, Some(Hedge::After(Duration::from_millis(250))));
    assert_eq!(config.models[1].strategy, Strategy::Fallback);
}

#[test]
fn bad_routing_values_name_their_lines() {
    let text = r#"
[routing]
retry_on = ["5xx", "sometimes"]
retry_budget = 1.5

[routing.breaker]
error_rate = 0

[alerts]
thresholds = [0.9, 0.5]
webhook_url = "ftp://x"

[[providers]]
name = "p"
kind = "mock"
keys = [{ key = "k", rpm = 0 }, { key = "k2", burst = 1 }]

[[models]]
name = "m"
strategy = "random"
targets = [{ target = "p/x", weight = 0 }]
"#;
    let found: Vec<(Option<usize>, String)> =
        problems(text, &Env::new()).into_iter().map(|p| (p.line, p.message)).collect();
    let has = |line: usize, needle: &str| {
        assert!(
            found.iter().any(|(l, m)| *l == Some(line) && m.contains(needle)),
            "no problem at line {line} containing {needle:?}: {found:#?}"
        );
    };
    // Parse errors stop at the first one, so each is checked on its own.
    has(20, "least-latency");
    let burst = text.replace("strategy = \"random\"\n", "");
    let p = problems(&burst, &Env::new());
    assert!(p[0].line == Some(16) && p[0].message.contains("unknown field `burst`"), "{p:#?}");
    let text = text.replace(", { key = \"k2\", burst = 1 }", "");
    let found2: Vec<(Option<usize>, String)> =
        problems(&text, &Env::new()).into_iter().map(|p| (p.line, p.message)).collect();
    assert!(
        found2.iter().any(|(l, m)| *l == Some(20) && m.contains("least-latency")),
        "{found2:#?}"
    );
    let text = text.replace("strategy = \"random\"\n", "");
    let found3: Vec<(Option<usize>, String)> =
        problems(&text, &Env::new()).into_iter().map(|p| (p.line, p.message)).collect();
    let has3 = |line: usize, needle: &str| {
        assert!(
            found3.iter().any(|(l, m)| *l == Some(line) && m.contains(needle)),
            "no problem at line {line} containing {needle:?}: {found3:#?}"
        );
    };
    has3(3, "\"sometimes\" is not a failure class");
    has3(4, "routing.retry_budget must be 0 to 1");
    has3(7, "routing.breaker.error_rate must be above 0");
    has3(10, "alerts.thresholds must be ascending");
    has3(11, "not an http(s) URL");
    has3(16, "must be greater than 0");
    has3(20, "weight 0");
}

#[test]
fn the_queue_follows_the_state_backend_and_keeps_its_own_file() {
    let config =
        load_text("[database]\nurl = \"sqlite:///var/lib/fg/main.db\"\n", &Env::new()).unwrap();
    assert_eq!(config.queue.backend, QueueBackend::Sqlite);
    assert_eq!(config.queue.sqlite_url, "sqlite:///var/lib/fg/main-jobs.db");
    assert_eq!((config.queue.workers, config.queue.max_attempts), (4, 3));
    assert_eq!(config.queue.history_ttl, Duration::from_secs(30 * 86_400));
    let config = load_text(
        "[state]\nbackend = \"redis\"\n[queue]\nworkers = 0\nlease = \"10s\"\nretry_base = \"2s\"\n\
         result_ttl = \"1h\"\nhistory_ttl = \"0s\"\nwebhook_attempts = 3\n",
        &Env::new(),
    )
    .unwrap();
    assert_eq!(config.queue.backend, QueueBackend::Redis);
    assert_eq!(config.queue.workers, 0);
    assert_eq!(config.queue.lease, Duration::from_secs(10));
    assert_eq!(config.queue.retry_base, Duration::from_secs(2));
    assert_eq!(config.queue.result_ttl, Duration::from_secs(3600));
    assert_eq!(config.queue.history_ttl, Duration::ZERO, "0s keeps the history");
    assert_eq!(config.queue.webhook_attempts, 3);
    let forced =
        load_text("[queue]\nbackend = \"sqlite\"\npath = \"/tmp/q.db\"\n", &Env::new()).unwrap();
    assert_eq!(forced.queue.sqlite_url, "sqlite:///tmp/q.db");
    let memory = load_text("[database]\nurl = \"sqlite::memory:\"\n", &Env::new()).unwrap();
    assert_eq!(memory.queue.sqlite_url, "sqlite::memory:");
}

#[test]
fn queue_mistakes_are_named_with_their_line() {
    let p = problems(
        "[queue]\nbackend = \"redis\"\nmax_attempts = 50\nwebhook_secret = \"short\"\nlease = \"0s\"\n",
        &Env::new(),
    );
    let text: Vec<String> = p.iter().map(|p| format!("{:?}: {}", p.line, p.message)).collect();
    assert!(
        text.iter()
            .any(|t| t.starts_with("Some(2)") && t.contains("needs [state] backend = \"redis\"")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("Some(3)") && t.contains("max_attempts_cap (20)")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.starts_with("Some(4)") && t.contains("at least 16")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("Some(5)") && t.contains("queue.lease")), "{text:?}");
    let p = problems("[queue]\nbackend = \"kafka\"\n", &Env::new());
    assert!(p[0].message.contains("auto") && p[0].message.contains("sqlite"), "{p:?}");
}

#[test]
fn realtime_rooms_take_the_first_matching_rule() {
    let config = load_text("", &Env::new()).unwrap();
    assert!(config.realtime.enabled);
    assert_eq!(config.realtime.max_connections, 10_000);
    assert_eq!(config.realtime.room("any").history_size, 0);
    let config = load_text(
        "[realtime]\nmax_connections = 50000\nhistory_size = 5\npresence = true\n\
         user_rooms = [\"u-{sub}\"]\n\
         [[realtime.rooms]]\npattern = \"chat-*\"\nhistory_size = 100\nhistory_ttl = \"1h\"\n\
         [[realtime.rooms]]\npattern = \"*\"\npresence = false\n",
        &Env::new(),
    )
    .unwrap();
    let realtime = &config.realtime;
    assert_eq!(realtime.max_connections, 50_000);
    assert_eq!(realtime.room("chat-1").history_size, 100);
    assert_eq!(realtime.room("chat-1").history_ttl, Duration::from_secs(3600));
    // A rule's unset options are the section's.
    assert!(realtime.room("chat-1").presence);
    assert_eq!(realtime.room("other").history_size, 5);
    assert!(!realtime.room("other").presence);
    assert_eq!(realtime.user_rooms, vec!["u-{sub}".to_string()]);
}

#[test]
fn realtime_mistakes_are_named_with_their_line() {
    let p = problems(
        "[realtime]\nsend_buffer = 0\nmax_message_bytes = 10\nhistory_size = 20000\n\
         [[realtime.rooms]]\npattern = \"bad room\"\n",
        &Env::new(),
    );
    let text: Vec<String> = p.iter().map(|p| format!("{:?}: {}", p.line, p.message)).collect();
    assert!(text.iter().any(|t| t.starts_with("Some(2)") && t.contains("send_buffer")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("Some(3)") && t.contains("256 to")), "{text:?}");
    assert!(
        text.iter().any(|t| t.starts_with("Some(4)") && t.contains("at most 10000")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("Some(6)") && t.contains("room pattern")),
        "{text:?}"
    );
    let p = problems("[realtime]\nmax_conections = 5\n", &Env::new());
    assert!(p[0].message.contains("max_connections"), "{p:?}");
}

#[test]
fn telemetry_is_off_without_an_endpoint_and_read_with_one() {
    assert!(load_text("", &Env::new()).unwrap().telemetry.is_none());
    // Set, but to an unset variable's empty default: off.
    let off = load_text("[telemetry]\notlp_endpoint = \"${OTLP:-}\"\n", &Env::new()).unwrap();
    assert!(off.telemetry.is_none());
    let config = load_text(
        "[telemetry]\notlp_endpoint = \"http://collector:4318\"\notlp_protocol = \"http/json\"\n\
         service_name = \"gateway-eu\"\nsample_ratio = 0.25\notlp_timeout = \"3s\"\n\
         [telemetry.otlp_headers]\nauthorization = \"Bearer ${OTLP_TOKEN}\"\n",
        &env(&[("OTLP_TOKEN", "collector-secret")]),
    )
    .unwrap();
    let t = config.telemetry.expect("on");
    // A bare collector address gets OTLP's traces path; a full URL is kept.
    assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.protocol, OtlpProtocol::HttpJson);
    assert_eq!(t.service_name, "gateway-eu");
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!(t.timeout, Duration::from_secs(3));
    assert_eq!(t.headers.len(), 1);
    assert_eq!(t.headers[0].0, "authorization");
    assert_eq!(t.headers[0].1.expose_secret(), "Bearer collector-secret");
    // The credential never shows in the config's debug form.
    assert!(!format!("{t:?}").contains("collector-secret"));
    let full = load_text(
        "[telemetry]\notlp_endpoint = \"https://otlp.example.com/otlp/v1/traces\"\n",
        &Env::new(),
    )
    .unwrap()
    .telemetry
    .unwrap();
    assert_eq!(full.endpoint, "https://otlp.example.com/otlp/v1/traces");
    assert_eq!(full.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(full.service_name, "floodgate");
    assert_eq!(full.sample_ratio, 1.0);
    assert_eq!(full.timeout, Duration::from_secs(10));
}

#[test]
fn telemetry_takes_the_standard_variables_when_the_file_says_nothing() {
    let from_env = |pairs: &[(&str, &str)], text: &str| {
        load_text(text, &env(pairs)).unwrap().telemetry.map(|t| (t.endpoint, t.service_name))
    };
    assert_eq!(
        from_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")], ""),
        Some(("http://c:4318/base/v1/traces".to_string(), "floodgate".to_string()))
    );
    assert_eq!(
        from_env(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ],
            ""
        ),
        Some(("http://c:4318/custom".to_string(), "from-env".to_string()))
    );
    // The file wins over the environment.
    assert_eq!(
        from_env(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"), ("OTEL_SERVICE_NAME", "env")],
            "[telemetry]\notlp_endpoint = \"http://file:4318\"\nservice_name = \"file\"\n"
        ),
        Some(("http://file:4318/v1/traces".to_string(), "file".to_string()))
    );
    assert_eq!(
        from_env(
            &[("OTEL_SDK_DISABLED", "true")],
            "[telemetry]\notlp_endpoint = \"http://file:4318\"\n"
        ),
        None
    );
    let p = problems("", &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, None);
    assert!(p[0].message.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT=\"collector:4317\""), "{p:?}");
}

#[test]
fn telemetry_mistakes_are_named_with_their_line() {
    let p = problems(
        "[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\notlp_protocol = \"grpc\"\n\
         sample_ratio = 1.5\notlp_timeout = \"0s\"\nservice_name = \" \"\n\
         [telemetry.otlp_headers]\n\"bad name\" = \"x\"\nx-token = \"line\\nbreak-secret\"\n",
        &Env::new(),
    );
    let text: Vec<String> = p.iter().map(|p| format!("{:?}: {}", p.line, p.message)).collect();
    let has = |line: usize, needle: &str| {
        assert!(
            text.iter().any(|t| t.starts_with(&format!("Some({line}):")) && t.contains(needle)),
            "no problem at line {line} containing {needle:?}: {text:#?}"
        );
    };
    has(2, "telemetry.otlp_endpoint \"grpc://collector:4317\" is not an http(s) URL");
    has(3, "\"grpc\" is not supported");
    has(4, "telemetry.sample_ratio must be 0 to 1");
    has(5, "telemetry.otlp_timeout must be longer than 0");
    has(6, "telemetry.service_name is empty");
    has(8, "\"bad name\" is not a valid HTTP header name");
    has(9, "telemetry.otlp_headers.x-token: the value is not a valid HTTP header value");
    assert_eq!(text.len(), 7, "{text:#?}");
    assert!(!text.iter().any(|t| t.contains("break-secret")), "a header value was shown: {text:?}");
    let p = problems("[telemetry]\notlp_protocol = \"thrift\"\n", &Env::new());
    assert!(p[0].message.contains("\"http/protobuf\" (the default), \"http/json\""), "{p:?}");
    let p = problems("[telemetry]\notlp_endpont = \"http://c:4318\"\n", &Env::new());
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("otlp_endpoint"), "{p:?}");
}
