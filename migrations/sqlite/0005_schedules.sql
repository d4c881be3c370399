-- Recurring jobs (jobs/*.toml): when the scheduler first saw each definition, and every run it
-- fired, so each due time fires once across restarts and missed runs can be caught up.

CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL          -- Unix ms; due times before it were never owed
);

CREATE TABLE schedule_runs (
    name     TEXT NOT NULL,
    due_at   INTEGER NOT NULL,           -- Unix ms of the due time (of the request, for manual runs)
    fired_at INTEGER NOT NULL,           -- Unix ms
    manual   INTEGER NOT NULL DEFAULT 0, -- 1 for `sluice jobs run NAME`
    job_id   TEXT,                       -- the job submitted; NULL when the run was skipped
    note     TEXT,                       -- why it was skipped, or other remarks
    PRIMARY KEY (name, due_at, manual)
);
