//! The database schema: numbered SQL files in `migrations/`, applied in order at open
//! and tracked by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_runs.sql"),
    include_str!("../migrations/0002_flow_runs.sql"),
    include_str!("../migrations/0003_concurrency_limits.sql"),
    include_str!("../migrations/0004_map_and_node_outputs.sql"),
    include_str!("../migrations/0005_owners_and_cancellation.sql"),
    include_str!("../migrations/0006_change_feed.sql"),
    include_str!("../migrations/0007_work_queue.sql"),
    include_str!("../migrations/0008_flow_graphs.sql"),
    include_str!("../migrations/0009_tenants.sql"),
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for another process's write lock before giving up.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Settings every connection needs.
pub(crate) fn configure(connection: &Connection) -> rusqlite::Result<()> {
    // First, so that every statement below (switching to WAL takes a lock too) waits
    // for another process opening the same store instead of failing "database is locked".
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers (`weir runs ls`) work while a run writes; NORMAL sync keeps every
    // committed transaction across a process crash (not across power loss), at a
    // fraction of FULL's cost per write.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Configures the connection and brings the schema up to date; returns the version
/// found, which is above [`VERSION`] for a store written by a newer weir (then nothing
/// is changed).
///
/// Several processes may open a new store at once: the version is read and the
/// migrations applied inside one IMMEDIATE transaction, which holds the database's write
/// lock, so one process migrates and the others then find the schema current.
pub(crate) fn prepare(connection: &mut Connection) -> rusqlite::Result<i64> {
    configure(connection)?;
    let read_version = |connection: &Connection| -> rusqlite::Result<i64> {
        connection.pragma_query_value(None, "user_version", |row| row.get(0))
    };
    // The common case (a current store) takes no write lock.
    let version = read_version(connection)?;
    if version >= VERSION {
        return Ok(version);
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version = read_version(&transaction)?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    transaction.commit()?;
    Ok(version)
}
