-- Finished jobs (completed, failed, cancelled), kept after the queue forgets
-- them (`[queue] result_ttl`): the job as GET /v1/jobs/{id} shows it.
CREATE TABLE job_history (
    id TEXT PRIMARY KEY,
    owner TEXT,
    status TEXT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    view TEXT NOT NULL
);
-- For the purge after `[queue] history_ttl`.
CREATE INDEX job_history_finished ON job_history (finished_at_ms);
