-- The dashboard's reads (src/store/dashboard.rs), each bounded by an index: a page of jobs
-- walks one of these backwards from its cursor (ids are UUIDv7, in submission order), the
-- chart reads the last hour of finished_at. (status, id) replaces (status): it serves every
-- read by status as well.
DROP INDEX jobs_status;
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE INDEX jobs_tenant_id ON jobs (tenant, id);
CREATE INDEX jobs_model_id ON jobs (model, id);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
