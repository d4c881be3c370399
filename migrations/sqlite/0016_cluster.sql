-- What the processes of a cluster share through the store (see src/cluster): the key buckets
-- capacity leases are taken from, keys at rest, each process's heartbeat and health report.
-- Times are nanoseconds on the store's own clock, the one clock every machine reads alike.

-- One limit (requests/min, tokens/min, requests/day) of one key of one deployment: the GCRA
-- state, its theoretical arrival time.
CREATE TABLE key_buckets (
    deployment TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_limit TEXT NOT NULL,
    tat_ns INTEGER NOT NULL,
    PRIMARY KEY (deployment, key_id, key_limit)
);

-- A key at rest, as one process learnt it: `cooldown` (a 429 or `remaining: 0`, scope = the
-- deployment) or `spent` (out of credit, scope = the provider).
CREATE TABLE key_rests (
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    key_id TEXT NOT NULL,
    until_ns INTEGER NOT NULL,
    PRIMARY KEY (kind, scope, key_id)
);

-- Each process of the cluster, while it beats.
CREATE TABLE cluster_processes (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ns INTEGER NOT NULL,
    seen_ns INTEGER NOT NULL
);

-- Each process's view of each deployment's health (JSON), and until when a circuit it opened
-- itself stays open (others adopt it).
CREATE TABLE process_health (
    process TEXT NOT NULL,
    deployment TEXT NOT NULL,
    report TEXT NOT NULL,
    opened_until_ns INTEGER,
    seen_ns INTEGER NOT NULL,
    PRIMARY KEY (process, deployment)
);
