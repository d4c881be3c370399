-- Outbox: a job accepted through the API is recorded with published = 0 and marked 1 once the
-- queue has confirmed its message. A row still at 0 after a while was stranded by a crash
-- between the two steps; the relay publishes it again (workers are idempotent, so a message
-- that did get through before the crash costs nothing extra).
ALTER TABLE jobs ADD COLUMN published INTEGER NOT NULL DEFAULT 1;
CREATE INDEX jobs_unpublished ON jobs (created_at) WHERE published = 0;
