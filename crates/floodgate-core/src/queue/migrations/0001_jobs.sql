-- The job queue (SQLite backend): one row per job, found for leasing by
-- (state, priority, run_after, seq).
CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    owner           TEXT,
    idempotency_key TEXT,
    route           TEXT    NOT NULL,
    request         TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    dead            INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_after_ms    INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  INTEGER,
    deadline_ms     INTEGER,
    webhook_url     TEXT,
    result          TEXT,
    error           TEXT,
    webhook         TEXT,
    created_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER,
    finished_at_ms  INTEGER
);
-- The same idempotency key of the same owner names one job ('' is the app's).
CREATE UNIQUE INDEX jobs_idempotency ON jobs (COALESCE(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_ready ON jobs (status, priority DESC, seq) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_finished ON jobs (finished_at_ms) WHERE finished_at_ms IS NOT NULL;
