-- The job loop: jobs, their attempts, results and cost records, and the embedded queue.
-- Times are Unix epoch milliseconds (UTC). Money is integer pico-USD (see src/pricing.rs);
-- prices are integer micro-USD per million tokens.

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,              -- UUIDv7
    tenant       TEXT NOT NULL,
    custom_id    TEXT,                          -- client idempotency key, unique per tenant
    urgency      TEXT NOT NULL CHECK (urgency IN ('realtime', 'standard', 'batch')),
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    model        TEXT NOT NULL,                 -- what the client asked for (route or deployment)
    user_tag     TEXT,
    team_tag     TEXT,
    feature_tag  TEXT,
    deadline     INTEGER,
    request      TEXT NOT NULL,                 -- the chat-completions body, as received
    attempts     INTEGER NOT NULL DEFAULT 0,    -- attempts started
    error_kind   TEXT,                          -- why a failed job failed
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE UNIQUE INDEX jobs_tenant_custom_id ON jobs (tenant, custom_id) WHERE custom_id IS NOT NULL;
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    number       INTEGER NOT NULL,              -- 1 for the first attempt of the job
    deployment   TEXT NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,                 -- the provider's model name
    key_id       TEXT NOT NULL,                 -- the key's id, never its secret
    tier         TEXT NOT NULL CHECK (tier IN ('realtime', 'batch')),
    outcome      TEXT NOT NULL,                 -- ok, rate_limited, server_error, timeout, ...
    http_status  INTEGER,
    error        TEXT,
    retry_after_ms INTEGER,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    UNIQUE (job_id, number)
);

CREATE TABLE results (
    job_id       TEXT PRIMARY KEY REFERENCES jobs (id),
    response     TEXT NOT NULL,                 -- the canonical chat.completion object
    created_at   INTEGER NOT NULL
);

-- One row per charged job: UNIQUE (job_id) is the "never charged twice" invariant.
CREATE TABLE costs (
    id                  INTEGER PRIMARY KEY,
    job_id              TEXT NOT NULL UNIQUE REFERENCES jobs (id),
    attempt_id          INTEGER NOT NULL REFERENCES attempts (id),
    tenant              TEXT NOT NULL,
    user_tag            TEXT,
    team_tag            TEXT,
    feature_tag         TEXT,
    deployment          TEXT NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    tier                TEXT NOT NULL,
    input_tokens        INTEGER NOT NULL,       -- prompt tokens, cached ones included
    cached_tokens       INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    input_price         INTEGER NOT NULL,       -- micro-USD per million tokens
    cached_input_price  INTEGER NOT NULL,
    output_price        INTEGER NOT NULL,
    amount_pico_usd     INTEGER NOT NULL,
    created_at          INTEGER NOT NULL
);
CREATE INDEX costs_tenant_created ON costs (tenant, created_at);

-- The embedded queue backend: a message is visible when visible_at <= now; taking it sets
-- visible_at to now + the visibility timeout and a fresh lease, so a dead worker's message
-- comes back by itself.
CREATE TABLE queue_messages (
    id           INTEGER PRIMARY KEY,
    urgency      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    visible_at   INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL DEFAULT 0,
    lease        INTEGER
);
CREATE INDEX queue_messages_ready ON queue_messages (urgency, visible_at);

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY,
    urgency      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    reason       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
