//! Tenants and tokens, on a pooled connection after this store's queued writes.

use async_trait::async_trait;
use weir_core::{TenantId, Timestamp, TokenScope};
use weir_store::{
    DeletedTenant, NewToken, StoreError, StoreResult, TenantDeletion, TenantRecord, Tenants,
    TokenRecord,
};

use crate::{PostgresStore, backend};

const TENANT_COLUMNS: &str = "name, weight, created, settings_json";
const TOKEN_COLUMNS: &str = "id, tenant, scope, created, expires, revoked";

fn tenant_from_row(row: &tokio_postgres::Row) -> TenantRecord {
    let settings = weir_store::TenantSettings::from_json(row.get(3));
    TenantRecord {
        name: TenantId::from_stored(row.get::<_, String>(0)),
        weight: u32::try_from(row.get::<_, i32>(1)).unwrap_or(1),
        created: Timestamp(row.get(2)),
        quotas: settings.quotas,
        ceilings: settings.ceilings,
    }
}

fn token_from_row(row: &tokio_postgres::Row) -> TokenRecord {
    TokenRecord {
        id: row.get(0),
        tenant: TenantId::from_stored(row.get::<_, String>(1)),
        // A scope this weir does not know grants the least.
        scope: TokenScope::parse(row.get(2)).unwrap_or(TokenScope::Read),
        created: Timestamp(row.get(3)),
        expires: row.get::<_, Option<i64>>(4).map(Timestamp),
        revoked: row.get::<_, Option<i64>>(5).map(Timestamp),
    }
}

#[async_trait]
impl Tenants for PostgresStore {
    async fn create_tenant(&self, tenant: &TenantRecord) -> StoreResult<bool> {
        let client = self.read().await?;
        let inserted = client
            .execute(
                "INSERT INTO tenants (name, weight, created, settings_json) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[
                    &tenant.name.as_str(),
                    &i32::try_from(tenant.weight).unwrap_or(i32::MAX),
                    &tenant.created.0,
                    &weir_store::TenantSettings {
                        quotas: tenant.quotas.clone(),
                        ceilings: tenant.ceilings.clone(),
                    }
                    .to_json(),
                ],
            )
            .await
            .map_err(backend("creating a tenant"))?;
        Ok(inserted == 1)
    }

    async fn tenant_record(&self, name: &TenantId) -> StoreResult<Option<TenantRecord>> {
        let client = self.read().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"),
                &[&name.as_str()],
            )
            .await
            .map_err(backend("reading a tenant"))?;
        Ok(row.as_ref().map(tenant_from_row))
    }

    async fn tenants(&self) -> StoreResult<Vec<TenantRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"),
                &[],
            )
            .await
            .map_err(backend("listing tenants"))?;
        Ok(rows.iter().map(tenant_from_row).collect())
    }

    async fn tenant_usage(
        &self,
        name: &TenantId,
        now: Timestamp,
    ) -> StoreResult<weir_store::TenantUsage> {
        let client = self.read().await?;
        let row = client
            .query_one(
                "SELECT
                     (SELECT count(*) FROM work_queue WHERE tenant = $1 AND worker IS NOT NULL
                        AND NOT done AND kind = 'task' AND lease_expires > $2),
                     (SELECT coalesce(sum(memory_bytes), 0)::bigint FROM work_queue WHERE tenant = $1
                        AND worker IS NOT NULL AND NOT done AND kind = 'task' AND lease_expires > $2),
                     (SELECT count(*) FROM work_queue WHERE tenant = $1 AND NOT done
                        AND (worker IS NULL OR lease_expires <= $2))",
                &[&name.as_str(), &now.0],
            )
            .await
            .map_err(backend("reading a tenant's use"))?;
        Ok(weir_store::TenantUsage {
            task_runs_in_progress: row.get::<_, i64>(0) as u64,
            memory_in_flight_bytes: row.get::<_, i64>(1) as u64,
            queued: row.get::<_, i64>(2) as u64,
        })
    }

    async fn take_submission(
        &self,
        name: &TenantId,
        now: Timestamp,
        per_minute: u32,
        burst: u32,
    ) -> StoreResult<Result<(), std::time::Duration>> {
        let mut client = self.read().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        // Locked: two servers taking from one bucket count one after the other.
        let row = transaction
            .query_opt(
                "SELECT bucket_runs, bucket_at FROM tenants WHERE name = $1 FOR UPDATE",
                &[&name.as_str()],
            )
            .await
            .map_err(backend("counting a tenant's submissions"))?;
        let bucket = row.and_then(|row| {
            Some((
                row.get::<_, Option<f64>>(0)?,
                Timestamp(row.get::<_, Option<i64>>(1)?),
            ))
        });
        match weir_store::take_from_bucket(bucket, now, per_minute, burst) {
            Ok((runs, at)) => {
                transaction
                    .execute(
                        "UPDATE tenants SET bucket_runs = $2, bucket_at = $3 WHERE name = $1",
                        &[&name.as_str(), &runs, &at.0],
                    )
                    .await
                    .map_err(backend("counting a tenant's submissions"))?;
                transaction
                    .commit()
                    .await
                    .map_err(backend("counting a tenant's submissions"))?;
                Ok(Ok(()))
            }
            Err(wait) => Ok(Err(wait)),
        }
    }

    async fn update_tenant(
        &self,
        name: &TenantId,
        weight: u32,
        settings: &weir_store::TenantSettings,
    ) -> StoreResult<bool> {
        let client = self.read().await?;
        let updated = client
            .execute(
                "UPDATE tenants SET weight = $2, settings_json = $3 WHERE name = $1",
                &[
                    &name.as_str(),
                    &i32::try_from(weight).unwrap_or(i32::MAX),
                    &settings.to_json(),
                ],
            )
            .await
            .map_err(backend("changing a tenant"))?;
        Ok(updated == 1)
    }

    async fn delete_tenant(&self, name: &TenantId) -> StoreResult<TenantDeletion> {
        if name.is_default() {
            return Ok(TenantDeletion::Default);
        }
        let mut client = self.read().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        let name = name.as_str();
        // Locked: a run or token made meanwhile waits for the deletion, then finds no
        // tenant.
        let exists = transaction
            .query_opt("SELECT 1 FROM tenants WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(backend("deleting a tenant"))?
            .is_some();
        if !exists {
            return Ok(TenantDeletion::NotFound);
        }
        let unfinished: i64 = transaction
            .query_one(
                "SELECT (SELECT count(*) FROM flow_runs WHERE tenant = $1 AND ended IS NULL)
                      + (SELECT count(*) FROM task_runs WHERE tenant = $1 AND ended IS NULL)",
                &[&name],
            )
            .await
            .map_err(backend("deleting a tenant"))?
            .get(0);
        if unfinished > 0 {
            return Ok(TenantDeletion::Busy {
                unfinished: unfinished as u64,
            });
        }
        let delete = |sql: String| {
            let transaction = &transaction;
            async move {
                transaction
                    .execute(&sql, &[&name])
                    .await
                    .map_err(backend("deleting a tenant"))
            }
        };
        for (table, column, runs) in weir_store::ROWS_OF_TENANT_RUNS {
            delete(format!(
                "DELETE FROM {table} WHERE {column} IN (SELECT id FROM {runs} WHERE tenant = $1)"
            ))
            .await?;
        }
        let mut deleted = DeletedTenant {
            task_runs: delete("DELETE FROM task_runs WHERE tenant = $1".into()).await?,
            flow_runs: delete("DELETE FROM flow_runs WHERE tenant = $1".into()).await?,
            ..DeletedTenant::default()
        };
        for table in weir_store::TENANT_TABLES {
            delete(format!("DELETE FROM {table} WHERE tenant = $1")).await?;
        }
        deleted.tokens = delete("DELETE FROM tokens WHERE tenant = $1".into()).await?;
        delete("DELETE FROM tenants WHERE name = $1".into()).await?;
        transaction
            .commit()
            .await
            .map_err(backend("committing a tenant's deletion"))?;
        Ok(TenantDeletion::Deleted(deleted))
    }

    async fn create_token(&self, token: &NewToken) -> StoreResult<()> {
        let client = self.read().await?;
        let record = &token.record;
        let inserted = client
            .execute(
                "INSERT INTO tokens (id, tenant, scope, hash, created, expires)
                 SELECT $1, name, $3, $4, $5, $6 FROM tenants WHERE name = $2",
                &[
                    &record.id,
                    &record.tenant.as_str(),
                    &record.scope.as_str(),
                    &token.hash,
                    &record.created.0,
                    &record.expires.map(|expires| expires.0),
                ],
            )
            .await
            .map_err(backend("creating a token"))?;
        if inserted == 0 {
            return Err(StoreError::UnknownTenant(record.tenant.to_string()));
        }
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let client = self.connection().await?;
        let row = client
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                &[&hash],
            )
            .await
            .map_err(backend("looking up a token"))?;
        Ok(row.as_ref().map(token_from_row))
    }

    async fn tokens(&self, tenant: Option<&TenantId>) -> StoreResult<Vec<TokenRecord>> {
        let client = self.read().await?;
        let rows =
            match tenant {
                Some(tenant) => client
                    .query(
                        &format!(
                            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = $1 ORDER BY id DESC"
                        ),
                        &[&tenant.as_str()],
                    )
                    .await,
                None => {
                    client
                        .query(
                            &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id DESC"),
                            &[],
                        )
                        .await
                }
            }
            .map_err(backend("listing tokens"))?;
        Ok(rows.iter().map(token_from_row).collect())
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let client = self.read().await?;
        let updated = client
            .execute(
                "UPDATE tokens SET revoked = $2 WHERE id = $1 AND revoked IS NULL",
                &[&id, &at.0],
            )
            .await
            .map_err(backend("revoking a token"))?;
        Ok(updated == 1)
    }
}
