//! The database schema: numbered SQL files in `migrations/`, applied in order at open
//! inside one transaction that holds an advisory lock, so that processes opening a new
//! store at once migrate it once; the version is recorded in `weir_schema`.

use tokio_postgres::Client;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_schema.sql"),
    include_str!("../migrations/0002_work_queue.sql"),
    include_str!("../migrations/0003_claim_indexes.sql"),
    include_str!("../migrations/0004_flow_graphs.sql"),
    include_str!("../migrations/0005_tenants.sql"),
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock every migrating process takes (an arbitrary number: "weir").
const MIGRATION_LOCK: i64 = 0x7765_6972;

/// Brings the schema up to date; returns the version found, which is above [`VERSION`]
/// for a store written by a newer weir (then nothing is changed).
pub(crate) async fn prepare(client: &mut Client) -> Result<i64, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS weir_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = transaction
        .query_opt("SELECT version FROM weir_schema", &[])
        .await?
        .map_or(0, |row| row.get(0));
    if version >= VERSION {
        return Ok(version);
    }
    for migration in MIGRATIONS.iter().skip(version.max(0) as usize) {
        transaction.batch_execute(migration).await?;
    }
    transaction.execute("DELETE FROM weir_schema", &[]).await?;
    transaction
        .execute("INSERT INTO weir_schema (version) VALUES ($1)", &[&VERSION])
        .await?;
    transaction.commit().await?;
    Ok(version)
}
