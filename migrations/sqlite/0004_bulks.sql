-- Bulks: sets of jobs submitted together from a JSONL file (`sluice bulk submit`,
-- `POST /v1/bulk`). A bulk is named, and the name is unique per tenant: submitting a file
-- under a name that already exists adds to that bulk, and the jobs' custom_ids are unique
-- within their bulk, so submitting the same file twice creates no duplicate jobs.
--
-- The OpenAI-compatible batch object (`/v1/batches`) is meant to be a view of a bulk: the
-- `endpoint`, `metadata`, `input_file_id` and the timestamps are kept here for it.

CREATE TABLE bulks (
    id             TEXT PRIMARY KEY,            -- UUIDv7
    tenant         TEXT NOT NULL,
    name           TEXT NOT NULL,               -- the idempotency key: unique per tenant
    endpoint       TEXT NOT NULL DEFAULT '/v1/chat/completions',
    metadata       TEXT,                        -- JSON object, for the batch object's `metadata`
    input_file_id  TEXT,                        -- the uploaded file it came from (Files API)
    submitting     INTEGER NOT NULL DEFAULT 1,  -- 1 while lines are still being recorded and published
    created_at     INTEGER NOT NULL,
    submitted_at   INTEGER,                     -- when the last submission finished publishing
    cancelled_at   INTEGER,
    UNIQUE (tenant, name)
);

-- A job's bulk and its line number in the submitted file (1-based), for results in input order.
ALTER TABLE jobs ADD COLUMN bulk_id TEXT REFERENCES bulks (id);
ALTER TABLE jobs ADD COLUMN bulk_line INTEGER;
CREATE INDEX jobs_bulk_line ON jobs (bulk_id, bulk_line) WHERE bulk_id IS NOT NULL;

-- custom_id is unique per tenant for jobs submitted alone, and per bulk for jobs of a bulk
-- (OpenAI's batch input reuses ids like "request-1" in every file).
DROP INDEX jobs_tenant_custom_id;
CREATE UNIQUE INDEX jobs_tenant_custom_id ON jobs (tenant, custom_id)
    WHERE custom_id IS NOT NULL AND bulk_id IS NULL;
CREATE UNIQUE INDEX jobs_bulk_custom_id ON jobs (bulk_id, custom_id)
    WHERE bulk_id IS NOT NULL;
