-- The OpenAI-compatible Files and Batches API (`/v1/files`, `/v1/batches`).
--
-- An uploaded file's bytes live on disk next to the database (`<database>.files/<id>`), never
-- in a row: uploads reach 200 MB and are streamed in and out. This table is their index.
-- Output and error files have no row: their ids name a batch, and their content is read from
-- the batch's jobs when asked for.

CREATE TABLE files (
    id          TEXT PRIMARY KEY,            -- "file-" + 32 hex digits of a UUIDv7
    tenant      TEXT NOT NULL,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX files_tenant_created ON files (tenant, created_at);

-- A batch is a view of a bulk (its id is the bulk's UUID as "batch_" + 32 hex digits); these
-- are the parts of OpenAI's batch object a bulk's jobs cannot tell.
ALTER TABLE bulks ADD COLUMN completion_window TEXT;
ALTER TABLE bulks ADD COLUMN expires_at INTEGER;     -- the jobs' deadline
ALTER TABLE bulks ADD COLUMN in_progress_at INTEGER; -- when the input file passed validation
ALTER TABLE bulks ADD COLUMN failed_at INTEGER;      -- when the input file failed validation
ALTER TABLE bulks ADD COLUMN errors TEXT;            -- JSON: OpenAI's errors.data, when failed
