-- The job queue (SQLite backend): one row per job. Every query the engine
-- runs is answered from an index, and the indexes that find work are
-- partial ones holding only queued or running jobs, so the finished jobs
-- kept for their TTL cost a lease nothing.
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
-- Queued jobs in lease order, strict priority then FIFO; run_after_ms and
-- deadline_ms are there so that one waiting out a backoff, or past its
-- deadline, is passed over without reading its row.
CREATE INDEX jobs_queued ON jobs (priority DESC, seq, run_after_ms, deadline_ms)
    WHERE status = 'queued';
-- The queued job that has waited longest (stats).
CREATE INDEX jobs_queued_since ON jobs (run_after_ms) WHERE status = 'queued';
-- Queued jobs whose deadline passes (the lease fails them).
CREATE INDEX jobs_deadline ON jobs (deadline_ms)
    WHERE status = 'queued' AND deadline_ms IS NOT NULL;
-- Leases by expiry (the lease takes over expired ones).
CREATE INDEX jobs_leased ON jobs (lease_until_ms, priority) WHERE status = 'running';
-- Finished jobs that are not dead letters, by age (purge).
CREATE INDEX jobs_finished ON jobs (finished_at_ms) WHERE dead = 0 AND finished_at_ms IS NOT NULL;
-- Dead letters, oldest failure first.
CREATE INDEX jobs_dead ON jobs (finished_at_ms) WHERE dead = 1;

-- How many jobs are in each state (stats), kept by the triggers below in
-- the transaction of every change, so that stats count no rows: finished
-- jobs pile up for their TTL, and counting them through an index would
-- read every one of them.
CREATE TABLE job_counts (
    status   TEXT    NOT NULL,
    dead     INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (status, dead, priority)
) WITHOUT ROWID;
CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (status, dead, priority, n) VALUES (NEW.status, NEW.dead, NEW.priority, 1)
        ON CONFLICT (status, dead, priority) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_counted_again AFTER UPDATE OF status, dead, priority ON jobs
    WHEN OLD.status IS NOT NEW.status OR OLD.dead IS NOT NEW.dead
        OR OLD.priority IS NOT NEW.priority BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE status = OLD.status AND dead = OLD.dead AND priority = OLD.priority;
    INSERT INTO job_counts (status, dead, priority, n) VALUES (NEW.status, NEW.dead, NEW.priority, 1)
        ON CONFLICT (status, dead, priority) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE status = OLD.status AND dead = OLD.dead AND priority = OLD.priority;
END;
