CREATE TABLE plugins (
    digest      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    tasks_json  TEXT NOT NULL,
    first_seen  INTEGER NOT NULL
);
CREATE TABLE task_runs (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    task           TEXT NOT NULL,
    plugin_name    TEXT NOT NULL,
    plugin_digest  TEXT NOT NULL,
    flow_run_id    TEXT,
    state          TEXT NOT NULL,
    state_message  TEXT,
    attempts       INTEGER NOT NULL,
    input_json     TEXT NOT NULL,
    tags_json      TEXT NOT NULL,
    cache_key      TEXT,
    result_digest  TEXT,
    created        INTEGER NOT NULL,
    started        INTEGER,
    ended          INTEGER
);
-- Ids sort by creation time, so listing newest first walks the primary key.
CREATE INDEX task_runs_by_flow_run ON task_runs (flow_run_id);
-- Keyed by run then sequence (no separate index): one b-tree page to touch per write.
CREATE TABLE task_run_states (
    task_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    message      TEXT,
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (task_run_id, seq)
) WITHOUT ROWID;
CREATE TABLE logs (
    task_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    level        TEXT NOT NULL,
    message      TEXT NOT NULL,
    PRIMARY KEY (task_run_id, seq)
) WITHOUT ROWID;
CREATE TABLE results (
    digest       TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    -- NULL when the result lives in the results/ directory
    inline_json  TEXT
) WITHOUT ROWID;
CREATE TABLE cache_entries (
    key            TEXT PRIMARY KEY,
    task           TEXT NOT NULL,
    plugin_digest  TEXT NOT NULL,
    result_digest  TEXT NOT NULL REFERENCES results (digest),
    task_run_id    TEXT NOT NULL,
    created        INTEGER NOT NULL,
    expires        INTEGER
);
