-- weir's shared store: the same records as the SQLite store's migrations 1 to 6.
-- Times are microseconds since the Unix epoch; JSON is kept as text, so it reads back
-- exactly as written (jsonb would reorder object keys).
CREATE TABLE plugins (
    digest      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    tasks_json  TEXT NOT NULL,
    first_seen  BIGINT NOT NULL
);
CREATE INDEX plugins_by_first_seen ON plugins (first_seen);

-- Content-addressed bytes: large results and plugins, readable from any machine.
CREATE TABLE blobs (
    digest  TEXT PRIMARY KEY,
    bytes   BYTEA NOT NULL
);

CREATE TABLE results (
    digest       TEXT PRIMARY KEY,
    size         BIGINT NOT NULL,
    -- NULL when the result is a blob
    inline_json  TEXT
);

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
    created             BIGINT NOT NULL,
    started             BIGINT,
    ended               BIGINT,
    owner               TEXT
);
CREATE INDEX flow_runs_by_name ON flow_runs (name);
CREATE INDEX flow_runs_by_parent ON flow_runs (parent_flow_run_id);
CREATE INDEX flow_runs_unfinished_by_owner ON flow_runs (owner) WHERE ended IS NULL;

CREATE TABLE flow_run_states (
    flow_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    message      TEXT,
    attempt      INTEGER NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (flow_run_id, seq)
);

-- Outputs of completed nodes, so a resumed flow run does not run them again.
CREATE TABLE flow_run_nodes (
    flow_run_id    TEXT NOT NULL,
    node           TEXT NOT NULL,
    result_digest  TEXT NOT NULL,
    PRIMARY KEY (flow_run_id, node)
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
    created        BIGINT NOT NULL,
    started        BIGINT,
    ended          BIGINT,
    node           TEXT,
    map_index      INTEGER,
    owner          TEXT
);
CREATE INDEX task_runs_by_flow_run ON task_runs (flow_run_id);
CREATE INDEX task_runs_unfinished_by_owner ON task_runs (owner) WHERE ended IS NULL;

CREATE TABLE task_run_states (
    task_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    message      TEXT,
    attempt      INTEGER NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (task_run_id, seq)
);

CREATE TABLE logs (
    task_run_id  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    at           BIGINT NOT NULL,
    level        TEXT NOT NULL,
    message      TEXT NOT NULL,
    PRIMARY KEY (task_run_id, seq)
);

CREATE TABLE cache_entries (
    key            TEXT PRIMARY KEY,
    task           TEXT NOT NULL,
    plugin_digest  TEXT NOT NULL,
    result_digest  TEXT NOT NULL REFERENCES results (digest),
    task_run_id    TEXT NOT NULL,
    created        BIGINT NOT NULL,
    expires        BIGINT
);

CREATE TABLE concurrency_limits (
    tag         TEXT PRIMARY KEY,
    slot_limit  INTEGER NOT NULL,
    created     BIGINT NOT NULL
);
-- A held slot is a lease: a process that dies stops renewing it, and it expires.
CREATE TABLE concurrency_slots (
    tag       TEXT NOT NULL,
    holder    TEXT NOT NULL,
    acquired  BIGINT NOT NULL,
    expires   BIGINT NOT NULL,
    PRIMARY KEY (tag, holder)
);
CREATE INDEX concurrency_slots_by_holder ON concurrency_slots (holder);

-- Every process that runs work heartbeats here; a run whose owner stopped is an orphan.
CREATE TABLE owners (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    machine      TEXT NOT NULL,
    pid_started  BIGINT NOT NULL,
    started      BIGINT NOT NULL,
    heartbeat    BIGINT NOT NULL
);

-- Written by `weir runs cancel`, read by the process that owns the run.
CREATE TABLE cancel_requests (
    run_id     TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    requested  BIGINT NOT NULL
);

-- The feed of changed runs: every transaction that writes runs adds one row, keyed by its
-- own id, listing the runs' ids (sorted, one per line). The feed reads rows of
-- transactions older than every transaction still running (pg_snapshot_xmin), so a poll
-- never skips a transaction that commits late; one row per transaction costs the writer
-- nothing per run.
CREATE TABLE run_changes (
    xid      xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
    run_ids  TEXT NOT NULL
);
