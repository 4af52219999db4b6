CREATE TABLE IF NOT EXISTS usage (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms          INTEGER NOT NULL,
    request_id     TEXT    NOT NULL,
    route          TEXT    NOT NULL,
    model          TEXT    NOT NULL,
    provider       TEXT    NOT NULL,
    upstream_model TEXT    NOT NULL,
    status         INTEGER NOT NULL,
    stream         INTEGER NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cached_tokens  INTEGER NOT NULL,
    cost_usd       REAL    NOT NULL,
    latency_ms     INTEGER NOT NULL,
    ttft_ms        INTEGER,
    error          TEXT
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at_ms);
CREATE INDEX IF NOT EXISTS usage_model ON usage (model, at_ms);
