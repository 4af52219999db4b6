-- Finished jobs (completed, failed, cancelled), kept after the queue forgets
-- them (`[queue] result_ttl`): the job as GET /v1/jobs/{id} shows it.
CREATE TABLE job_history (
    id TEXT PRIMARY KEY,
    owner TEXT,
    status TEXT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    view TEXT NOT NULL
);
CREATE INDEX job_history_owner ON job_history (owner, finished_at_ms);
