//! Tenants and tokens: written through the writer (answered once committed), read from
//! the reading connections.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use weir_core::{TenantId, Timestamp, TokenScope};
use weir_store::{
    DeletedTenant, NewToken, StoreError, StoreResult, TenantDeletion, TenantRecord, Tenants,
    TokenRecord,
};

use crate::{SqliteStore, backend};

const TENANT_COLUMNS: &str = "name, weight, created, settings_json";
const TOKEN_COLUMNS: &str = "id, tenant, scope, created, expires, revoked";

fn tenant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TenantRecord> {
    let settings = weir_store::TenantSettings::from_json(&row.get::<_, String>(3)?);
    Ok(TenantRecord {
        name: TenantId::from_stored(row.get::<_, String>(0)?),
        weight: row.get(1)?,
        created: Timestamp(row.get(2)?),
        quotas: settings.quotas,
        ceilings: settings.ceilings,
    })
}

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scope: String = row.get(2)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        tenant: TenantId::from_stored(row.get::<_, String>(1)?),
        // A scope this weir does not know grants the least.
        scope: TokenScope::parse(&scope).unwrap_or(TokenScope::Read),
        created: Timestamp(row.get(3)?),
        expires: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        revoked: row.get::<_, Option<i64>>(5)?.map(Timestamp),
    })
}

#[async_trait]
impl Tenants for SqliteStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "INSERT OR IGNORE INTO tenants (name, weight, created, settings_json) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            tenant.name.as_str(),
                            tenant.weight,
                            tenant.created.0,
                            weir_store::TenantSettings {
                                quotas: tenant.quotas.clone(),
                                ceilings: tenant.ceilings.clone(),
                            }
                            .to_json()
                        ],
                    )
                    .map(|inserted| inserted == 1)
                    .map_err(backend("creating a tenant"))
            })
            .await
    }

    async fn tenant_record(&self, name: &TenantId) -> StoreResult<Option<TenantRecord>> {
        self.read()
            .await?
            .prepare_cached(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?1"
            ))
            .and_then(|mut statement| {
                statement
                    .query_row([name.as_str()], tenant_from_row)
                    .optional()
            })
            .map_err(backend("reading a tenant"))
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        self.read()
            .await?
            .prepare_cached(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
            ))
            .and_then(|mut statement| {
                statement
                    .query_map([], tenant_from_row)?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("listing tenants"))
    }

    async fn tenant_usage(
        &self,
        name: &TenantId,
        now: Timestamp,
    ) -> StoreResult<weir_store::TenantUsage> {
        self.read()
            .await?
            .prepare_cached(
                "SELECT
                     (SELECT count(*) FROM work_queue WHERE tenant = ?1 AND worker IS NOT NULL
                        AND done = 0 AND kind = 'task' AND lease_expires > ?2),
                     (SELECT coalesce(sum(memory_bytes), 0) FROM work_queue WHERE tenant = ?1
                        AND worker IS NOT NULL AND done = 0 AND kind = 'task' AND lease_expires > ?2),
                     (SELECT count(*) FROM work_queue WHERE tenant = ?1 AND done = 0
                        AND (worker IS NULL OR lease_expires <= ?2))",
            )
            .and_then(|mut statement| {
                statement.query_row(params![name.as_str(), now.0], |row| {
                    Ok(weir_store::TenantUsage {
                        task_runs_in_progress: row.get::<_, i64>(0)? as u64,
                        memory_in_flight_bytes: row.get::<_, i64>(1)? as u64,
                        queued: row.get::<_, i64>(2)? as u64,
                    })
                })
            })
            .map_err(backend("reading a tenant's use"))
    }

    async fn take_submission(
        &self,
        name: &TenantId,
        now: Timestamp,
        per_minute: u32,
        burst: u32,
    ) -> StoreResult<Result<(), std::time::Duration>> {
        let name = name.clone();
        self.shared
            .writer
            .call(move |connection| {
                let take = || -> rusqlite::Result<Result<(), std::time::Duration>> {
                    let bucket: Option<(Option<f64>, Option<i64>)> = connection
                        .prepare_cached(
                            "SELECT bucket_runs, bucket_at FROM tenants WHERE name = ?1",
                        )?
                        .query_row([name.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?;
                    let bucket = bucket.and_then(|(runs, at)| Some((runs?, Timestamp(at?))));
                    match weir_store::take_from_bucket(bucket, now, per_minute, burst) {
                        Ok((runs, at)) => {
                            connection
                                .prepare_cached(
                                    "UPDATE tenants SET bucket_runs = ?2, bucket_at = ?3 WHERE name = ?1",
                                )?
                                .execute(params![name.as_str(), runs, at.0])?;
                            Ok(Ok(()))
                        }
                        Err(wait) => Ok(Err(wait)),
                    }
                };
                take().map_err(backend("counting a tenant's submissions"))
            })
            .await
    }

    async fn update_tenant(
        &self,
        name: &TenantId,
        weight: u32,
        settings: &weir_store::TenantSettings,
    ) -> StoreResult<bool> {
        let (name, quotas) = (name.clone(), settings.to_json());
        self.shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "UPDATE tenants SET weight = ?2, settings_json = ?3 WHERE name = ?1",
                        params![name.as_str(), weight, quotas],
                    )
                    .map(|updated| updated == 1)
                    .map_err(backend("changing a tenant"))
            })
            .await
    }

    async fn delete_tenant(&self, name: &TenantId) -> StoreResult<TenantDeletion> {
        if name.is_default() {
            return Ok(TenantDeletion::Default);
        }
        let name = name.clone();
        self.shared
            .writer
            .call(move |connection| {
                delete_tenant(connection, name.as_str()).map_err(backend("deleting a tenant"))
            })
            .await
    }

    async fn create_token(&self, token: &NewToken) -> StoreResult<()> {
        let token = token.clone();
        self.shared
            .writer
            .call(move |connection| {
                let record = &token.record;
                let inserted = connection
                    .execute(
                        "INSERT INTO tokens (id, tenant, scope, hash, created, expires)
                         SELECT ?1, name, ?3, ?4, ?5, ?6 FROM tenants WHERE name = ?2",
                        params![
                            record.id,
                            record.tenant.as_str(),
                            record.scope.as_str(),
                            token.hash,
                            record.created.0,
                            record.expires.map(|expires| expires.0)
                        ],
                    )
                    .map_err(backend("creating a token"))?;
                if inserted == 0 {
                    return Err(StoreError::UnknownTenant(record.tenant.to_string()));
                }
                Ok(())
            })
            .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read()
            .await?
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
            ))
            .and_then(|mut statement| statement.query_row([hash], token_from_row).optional())
            .map_err(backend("looking up a token"))
    }

    async fn tokens(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<TokenRecord>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC"
            ))
            .map_err(backend("listing tokens"))?;
        let rows = statement
            .query_map([tenant.map(TenantId::as_str)], token_from_row)
            .map_err(backend("listing tokens"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing tokens"))
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "UPDATE tokens SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
                        params![id, at.0],
                    )
                    .map(|updated| updated == 1)
                    .map_err(backend("revoking a token"))
            })
            .await
    }
}

/// Deletes a tenant and what it owns, inside the writer's transaction.
fn delete_tenant(
    connection: &rusqlite::Connection,
    name: &str,
) -> rusqlite::Result<TenantDeletion> {
    let exists = connection
        .prepare_cached("SELECT 1 FROM tenants WHERE name = ?1")?
        .exists([name])?;
    if !exists {
        return Ok(TenantDeletion::NotFound);
    }
    let unfinished: i64 = connection
        .prepare_cached(
            "SELECT (SELECT count(*) FROM flow_runs WHERE tenant = ?1 AND ended IS NULL)
                  + (SELECT count(*) FROM task_runs WHERE tenant = ?1 AND ended IS NULL)",
        )?
        .query_row([name], |row| row.get(0))?;
    if unfinished > 0 {
        return Ok(TenantDeletion::Busy {
            unfinished: unfinished as u64,
        });
    }
    for (table, column, runs) in weir_store::ROWS_OF_TENANT_RUNS {
        connection.execute(
            &format!(
                "DELETE FROM {table} WHERE {column} IN (SELECT id FROM {runs} WHERE tenant = ?1)"
            ),
            [name],
        )?;
    }
    let mut deleted = DeletedTenant {
        task_runs: connection.execute("DELETE FROM task_runs WHERE tenant = ?1", [name])? as u64,
        flow_runs: connection.execute("DELETE FROM flow_runs WHERE tenant = ?1", [name])? as u64,
        ..DeletedTenant::default()
    };
    for table in weir_store::TENANT_TABLES {
        connection.execute(&format!("DELETE FROM {table} WHERE tenant = ?1"), [name])?;
    }
    deleted.tokens = connection.execute("DELETE FROM tokens WHERE tenant = ?1", [name])? as u64;
    connection.execute("DELETE FROM tenants WHERE name = ?1", [name])?;
    Ok(TenantDeletion::Deleted(deleted))
}
