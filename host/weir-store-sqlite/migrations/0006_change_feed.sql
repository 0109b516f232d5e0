-- The feed of changed runs: every write transaction that inserts or updates runs appends
-- one row with their ids (sorted, one per line). SQLite commits one writer at a time and
-- rowids only grow, so the rows are in commit order and a poll for `seq > n` misses
-- nothing. One row per batch costs the writer nothing per run, where an index of runs by
-- their last change would be moved by every write of a run.
CREATE TABLE run_changes (
    seq      INTEGER PRIMARY KEY,
    run_ids  TEXT NOT NULL
);
-- Plugins are listed in the order they were first seen (`Plugins::plugins`).
CREATE INDEX plugins_by_first_seen ON plugins (first_seen);
