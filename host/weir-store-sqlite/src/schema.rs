//! The database schema and its migrations, tracked by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
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
"#,
    r#"
CREATE TABLE concurrency_limits (
    tag         TEXT PRIMARY KEY,
    slot_limit  INTEGER NOT NULL,
    created     INTEGER NOT NULL
) WITHOUT ROWID;
-- A held slot is a lease: a process that dies stops renewing it, and it expires.
CREATE TABLE concurrency_slots (
    tag       TEXT NOT NULL,
    holder    TEXT NOT NULL,
    acquired  INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    PRIMARY KEY (tag, holder)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE task_runs ADD COLUMN map_index INTEGER;
-- Outputs of completed nodes, so a resumed flow run does not run them again.
CREATE TABLE flow_run_nodes (
    flow_run_id    TEXT NOT NULL,
    node           TEXT NOT NULL,
    result_digest  TEXT NOT NULL,
    PRIMARY KEY (flow_run_id, node)
) WITHOUT ROWID;
"#,
    r#"
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
"#,
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings every connection needs.
pub(crate) fn configure(connection: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers (`weir runs ls`) work while a run writes; NORMAL sync keeps every
    // committed transaction across a process crash (not across power loss), at a
    // fraction of FULL's cost per write.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    // Several weir processes may share one store; a writer waits for another's commit.
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    Ok(())
}

/// Configures the connection and brings the schema up to date; returns the version
/// found, which is above [`VERSION`] for a store written by a newer weir (then nothing
/// is changed).
pub(crate) fn prepare(connection: &Connection) -> rusqlite::Result<i64> {
    configure(connection)?;
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > VERSION {
        return Ok(version);
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        connection.execute_batch(&format!(
            "BEGIN; {migration} PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    Ok(version)
}
