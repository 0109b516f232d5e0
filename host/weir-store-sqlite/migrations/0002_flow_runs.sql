ALTER TABLE task_runs ADD COLUMN node TEXT;
CREATE TABLE flow_runs (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    flow                TEXT NOT NULL,
    source              TEXT,
    parameters_json     TEXT NOT NULL,
    parent_flow_run_id  TEXT,
    parent_node         TEXT,
    state               TEXT NOT NULL,
    state_message       TEXT,
    attempts            INTEGER NOT NULL,
    result_digest       TEXT,
    created             INTEGER NOT NULL,
    started             INTEGER,
    ended               INTEGER
);
CREATE TABLE flow_run_states (
    flow_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    message      TEXT,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (flow_run_id, seq)
) WITHOUT ROWID;
