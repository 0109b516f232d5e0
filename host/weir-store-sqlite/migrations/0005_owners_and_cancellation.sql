-- Every process that runs work heartbeats here; a run whose owner stopped is an orphan.
CREATE TABLE owners (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    machine      TEXT NOT NULL,
    pid_started  INTEGER NOT NULL,
    started      INTEGER NOT NULL,
    heartbeat    INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE task_runs ADD COLUMN owner TEXT;
ALTER TABLE flow_runs ADD COLUMN owner TEXT;
-- Partial: only unfinished runs are in them, so finding an owner's unfinished runs reads
-- only those, and a run created finished (a cache hit) adds no index entry.
CREATE INDEX task_runs_unfinished_by_owner ON task_runs (owner) WHERE ended IS NULL;
CREATE INDEX flow_runs_unfinished_by_owner ON flow_runs (owner) WHERE ended IS NULL;
CREATE INDEX flow_runs_by_parent ON flow_runs (parent_flow_run_id);
CREATE INDEX concurrency_slots_by_holder ON concurrency_slots (holder);
-- Written by `weir runs cancel`, read by the process that owns the run.
CREATE TABLE cancel_requests (
    run_id     TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    requested  INTEGER NOT NULL
) WITHOUT ROWID;
