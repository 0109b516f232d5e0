-- The feed of changed runs: every write transaction takes the next number here and
-- stamps the runs it inserts or updates with it. SQLite commits one writer at a time,
-- so the numbers are in commit order and a poll for `changed > n` misses nothing.
CREATE TABLE change_seq (
    only  INTEGER PRIMARY KEY CHECK (only = 0),
    seq   INTEGER NOT NULL
);
INSERT INTO change_seq (only, seq) VALUES (0, 0);
ALTER TABLE task_runs ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flow_runs ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX task_runs_by_change ON task_runs (changed, id);
CREATE INDEX flow_runs_by_change ON flow_runs (changed, id);
-- `weir plugins` and the API list plugins in the order they were first seen.
CREATE INDEX plugins_by_first_seen ON plugins (first_seen);
