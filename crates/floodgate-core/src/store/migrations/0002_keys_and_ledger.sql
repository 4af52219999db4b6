-- The ledger learns who made each request and whether it was answered from
-- the cache, and each record gets the id that makes writing it idempotent.
ALTER TABLE usage ADD COLUMN record_id TEXT;
ALTER TABLE usage ADD COLUMN key_id TEXT;
ALTER TABLE usage ADD COLUMN end_user TEXT;
ALTER TABLE usage ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
-- Rows written before record ids existed get one of their own.
UPDATE usage SET record_id = 'legacy-' || id WHERE record_id IS NULL;
CREATE UNIQUE INDEX usage_record_id ON usage (record_id);
CREATE INDEX usage_key ON usage (key_id, at_ms);

CREATE TABLE virtual_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    hash           TEXT    NOT NULL UNIQUE,
    prefix         TEXT    NOT NULL,
    -- A JSON array of aliases; NULL means every alias.
    models         TEXT,
    rpm            INTEGER,
    tpm            INTEGER,
    max_concurrent INTEGER,
    max_budget_usd REAL,
    budget_period  TEXT    NOT NULL CHECK (budget_period IN ('day', 'month', 'total')),
    -- A JSON object.
    metadata       TEXT    NOT NULL,
    -- A JSON array of strings.
    scopes         TEXT    NOT NULL,
    expires_at_ms  INTEGER,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER,
    seq            INTEGER NOT NULL UNIQUE
);
