-- The oldest job still queued, per urgency, read on every metrics scrape: a partial index
-- holds only queued jobs (each enters once and leaves when it starts or ends), so
-- `MIN(created_at) … WHERE status = 'queued' AND urgency = ?` is one index seek, whatever
-- the number of jobs in the store.
CREATE INDEX jobs_queued ON jobs (urgency, created_at) WHERE status = 'queued';
