-- The work queue: runs waiting for a worker (task runs, flow runs to drive), the lease a
-- worker holds on each (renewed by heartbeat) and its generation, which every claim moves
-- on: a write carrying an older generation is refused (fencing). A finished row stays,
-- `done`, until the flow run that waits for it collects it.
CREATE TABLE work_queue (
    run_id              TEXT PRIMARY KEY,
    kind                TEXT NOT NULL,
    parent_flow_run_id  TEXT,
    spec                TEXT NOT NULL,
    -- Newline-separated, with a newline before and after each: `LIKE '%\ntag\n%'`.
    tags                TEXT NOT NULL,
    requirements        TEXT NOT NULL,
    ready_at            INTEGER NOT NULL,
    created             INTEGER NOT NULL,
    generation          INTEGER NOT NULL DEFAULT 0,
    worker              TEXT,
    worker_name         TEXT,
    lease_expires       INTEGER,
    done                INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX work_queue_claimable ON work_queue (ready_at, created) WHERE done = 0;
CREATE INDEX work_queue_done_by_parent ON work_queue (parent_flow_run_id) WHERE done = 1;
CREATE INDEX work_queue_by_worker ON work_queue (worker) WHERE worker IS NOT NULL;
-- The workers claiming from the queue and what they offer, so that a run no live worker
-- can take says why. Heartbeat: each lease renewal.
CREATE TABLE workers (
    owner        TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    offer_json   TEXT NOT NULL,
    started      INTEGER NOT NULL,
    heartbeat    INTEGER NOT NULL
) WITHOUT ROWID;
