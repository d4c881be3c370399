-- Uploaded files' bytes kept in the store itself, in chunks, when no folder keeps them (the
-- default with PostgreSQL, so every process on every machine reads what one of them took;
-- see src/store/files/chunks.rs).
--
-- An upload being written has a row in `file_uploads` (touched by each chunk written), its
-- chunks in `file_chunks` under the id the file will have; keeping it deletes that row and
-- inserts the `files` row in one transaction, so a file is visible only once whole. An upload
-- untouched for an hour is swept: its row and its chunks deleted together.

CREATE TABLE file_uploads (
    file_id     TEXT PRIMARY KEY,            -- the id the file will have: "file-" + 32 hex digits
    started_at  BIGINT NOT NULL,
    touched_at  BIGINT NOT NULL              -- when the last chunk was written
);

CREATE TABLE file_chunks (
    file_id  TEXT NOT NULL,
    seq      BIGINT NOT NULL,                -- 0, 1, 2 … in the file's order
    bytes    BYTEA NOT NULL,                 -- at most 1 MiB
    PRIMARY KEY (file_id, seq)
);
