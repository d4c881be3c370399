-- Jobs a submission recorded but the queue did not confirm in time, so the producer was told
-- that nothing was accepted (a 503). Their rows are deleted, which frees their custom_id for
-- the producer's retry, and their ids are kept here: the broker may still take a message
-- that was already in the socket, and the worker that consumes it finds the id here and
-- dead-letters it instead of running a job nobody thinks was accepted.
CREATE TABLE refused_jobs (
    id TEXT PRIMARY KEY,
    refused_at INTEGER NOT NULL
) WITHOUT ROWID;
