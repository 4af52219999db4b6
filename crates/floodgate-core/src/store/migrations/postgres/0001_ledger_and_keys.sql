-- The usage ledger: one row per answered (or failed) request. The gateway
-- makes record_id, so writing a record twice stores it once.
CREATE TABLE usage (
    record_id      TEXT             PRIMARY KEY,
    at_ms          BIGINT           NOT NULL,
    request_id     TEXT             NOT NULL,
    route          TEXT             NOT NULL,
    key_id         TEXT,
    end_user       TEXT,
    model          TEXT             NOT NULL,
    provider       TEXT             NOT NULL,
    upstream_model TEXT             NOT NULL,
    status         INTEGER          NOT NULL,
    stream         BOOLEAN          NOT NULL,
    -- u32 counts: BIGINT, since INTEGER stops at 2^31 - 1.
    input_tokens   BIGINT           NOT NULL,
    output_tokens  BIGINT           NOT NULL,
    cached_tokens  BIGINT           NOT NULL,
    cost_usd       DOUBLE PRECISION NOT NULL,
    latency_ms     BIGINT           NOT NULL,
    ttft_ms        BIGINT,
    retries        BIGINT           NOT NULL DEFAULT 0,
    cache_hit      BOOLEAN          NOT NULL DEFAULT FALSE,
    error          TEXT
);
CREATE INDEX usage_at ON usage (at_ms);
CREATE INDEX usage_key ON usage (key_id, at_ms);
CREATE INDEX usage_model ON usage (model, at_ms);

-- Every key write takes the next value, under an advisory lock held to the
-- commit, so seq order is commit order.
CREATE SEQUENCE virtual_keys_seq AS BIGINT;

CREATE TABLE virtual_keys (
    id             TEXT             PRIMARY KEY,
    name           TEXT             NOT NULL,
    hash           TEXT             NOT NULL UNIQUE,
    prefix         TEXT             NOT NULL,
    -- NULL means every alias; an empty array, none.
    models         TEXT[],
    rpm            BIGINT,
    tpm            BIGINT,
    max_concurrent BIGINT,
    max_budget_usd DOUBLE PRECISION,
    budget_period  TEXT             NOT NULL CHECK (budget_period IN ('day', 'month', 'total')),
    metadata       JSONB            NOT NULL,
    scopes         TEXT[]           NOT NULL,
    expires_at_ms  BIGINT,
    created_at_ms  BIGINT           NOT NULL,
    updated_at_ms  BIGINT           NOT NULL,
    revoked_at_ms  BIGINT,
    seq            BIGINT           NOT NULL UNIQUE
);
