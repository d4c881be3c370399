-- The batch tier: provider batches (a submission to OpenAI's Batch API, Anthropic's Message
-- Batches or Gemini's batch mode) and the jobs each one holds.
--
-- A batch-tier job is acked on the queue once its batch_items row is committed: from then on
-- the store alone says where the job is, and a restarted process resumes every batch from
-- here (collecting → submitting → submitted → ended | failed | cancelled).

CREATE TABLE provider_batches (
    id                TEXT PRIMARY KEY,            -- Sluice's id (UUIDv7), sent as the batch's label
    deployment        TEXT NOT NULL,
    key_id            TEXT NOT NULL,               -- the key the batch is submitted and polled with
    state             TEXT NOT NULL CHECK (state IN
                        ('collecting', 'submitting', 'submitted', 'ended', 'failed', 'cancelled')),
    requests          INTEGER NOT NULL DEFAULT 0,  -- items added (cancelled ones included)
    bytes             INTEGER NOT NULL DEFAULT 0,  -- their size in the provider's batch format
    max_requests      INTEGER NOT NULL,            -- the caps it was opened with
    max_bytes         INTEGER NOT NULL,
    flush_at          INTEGER NOT NULL,            -- submitted by then even if not full
    provider_batch_id TEXT,                        -- the provider's id, once submitted
    provider_status   TEXT,                        -- the provider's last word on it
    lease_until       INTEGER,                     -- a process working on it (submit, track)
    next_check_at     INTEGER NOT NULL,            -- when the tracker looks at it next
    submit_failures   INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    submitted_at      INTEGER,
    ended_at          INTEGER,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX provider_batches_open ON provider_batches (deployment, state);
CREATE INDEX provider_batches_due ON provider_batches (state, next_check_at);

-- One row per job sent to the batch tier. A job goes to a provider batch at most once (its
-- first attempt); `state` guards every outcome: only a `pending` item may be answered, so a
-- result arriving after the job went real-time (`returned`) or was cancelled is dropped.
CREATE TABLE batch_items (
    job_id          TEXT PRIMARY KEY REFERENCES jobs (id),
    batch_id        TEXT NOT NULL REFERENCES provider_batches (id),
    attempt         INTEGER NOT NULL,             -- the job's attempt number this item is
    state           TEXT NOT NULL CHECK (state IN ('pending', 'done', 'returned', 'cancelled')),
    deadline        INTEGER,                      -- the job's effective deadline (ms), if any
    chosen_because  TEXT NOT NULL,                -- why the batch tier (kept for the attempt row)
    added_at        INTEGER NOT NULL
);
CREATE INDEX batch_items_batch ON batch_items (batch_id, state);
