-- One row that `GET /readyz` writes (`Store::probe_write`): a database that reads well may
-- still refuse every write (disk full, read-only file), and only a committed write shows it.
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written_at INTEGER NOT NULL
);
