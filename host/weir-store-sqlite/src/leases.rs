//! Concurrency limits and their slots, and run owners: work answered by the writer
//! thread once its batch commits, so a slot or an ending is never reported done and
//! then lost.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use weir_core::{FlowRunId, Timestamp};
use weir_store::{
    CancelRequest, ConcurrencyLimit, EndedRuns, Ending, Leases, OwnerRecord, Owners, SlotRequest,
    StoreError, StoreResult,
};

use crate::writer::{RunSelection, WriteOp};
use crate::{SqliteStore, backend};

#[async_trait]
impl Leases for SqliteStore {
    async fn set_concurrency_limit(
        &self,
        tag: &str,
        limit: u32,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (tag, tenant) = (tag.to_owned(), self.tenant.clone());
        self.shared.writer
            .call(move |connection| {
                connection
                .execute(
                    "INSERT INTO concurrency_limits (tenant, tag, slot_limit, created) VALUES (?4, ?1, ?2, ?3)
                     ON CONFLICT (tenant, tag) DO UPDATE SET slot_limit = excluded.slot_limit",
                    params![tag, limit, now.0, tenant.as_str()],
                )
                .map_err(backend("setting a concurrency limit"))?;
                Ok(())
            })
            .await
    }

    async fn concurrency_limit(
        &self,
        tag: &str,
        now: Timestamp,
    ) -> StoreResult<Option<ConcurrencyLimit>> {
        Ok(self
            .concurrency_limits(now)
            .await?
            .into_iter()
            .find(|limit| limit.tag == tag))
    }

    async fn concurrency_limits(&self, now: Timestamp) -> StoreResult<Vec<ConcurrencyLimit>> {
        let connection = self.read().await?;
        let mut limits: Vec<ConcurrencyLimit> = connection
            .prepare_cached(
                "SELECT tag, slot_limit, created FROM concurrency_limits WHERE tenant = ?1 ORDER BY tag",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([self.tenant()], |row| {
                        Ok(ConcurrencyLimit {
                            tag: row.get(0)?,
                            limit: row.get(1)?,
                            holders: Vec::new(),
                            created: Timestamp(row.get(2)?),
                        })
                    })?
                    .collect::<Result<_, _>>()
            })
            .map_err(backend("listing concurrency limits"))?;
        let mut statement = connection
            .prepare_cached(
                "SELECT holder FROM concurrency_slots WHERE tenant = ?3 AND tag = ?1 AND expires > ?2 ORDER BY acquired",
            )
            .map_err(backend("listing held slots"))?;
        for limit in &mut limits {
            limit.holders = statement
                .query_map(params![limit.tag, now.0, self.tenant()], |row| row.get(0))
                .and_then(|rows| rows.collect::<Result<_, _>>())
                .map_err(backend("listing held slots"))?;
        }
        Ok(limits)
    }

    async fn delete_concurrency_limit(&self, tag: &str) -> StoreResult<bool> {
        let (tag, tenant) = (tag.to_owned(), self.tenant.clone());
        self.shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "DELETE FROM concurrency_slots WHERE tenant = ?2 AND tag = ?1",
                        [tag.as_str(), tenant.as_str()],
                    )
                    .and_then(|_| {
                        connection.execute(
                            "DELETE FROM concurrency_limits WHERE tenant = ?2 AND tag = ?1",
                            [tag.as_str(), tenant.as_str()],
                        )
                    })
                    .map(|deleted| deleted > 0)
                    .map_err(backend("deleting a concurrency limit"))
            })
            .await
    }

    async fn reset_concurrency_limit(&self, tag: &str) -> StoreResult<usize> {
        let (tag, tenant) = (tag.to_owned(), self.tenant.clone());
        self.shared
            .writer
            .call(move |connection| {
                connection
                    .execute(
                        "DELETE FROM concurrency_slots WHERE tenant = ?2 AND tag = ?1",
                        [tag.as_str(), tenant.as_str()],
                    )
                    .map_err(backend("resetting a concurrency limit"))
            })
            .await
    }

    async fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> StoreResult<SlotRequest> {
        let tags = tags.to_vec();
        let (holder, tenant) = (holder.to_owned(), self.tenant.clone());
        self.shared
            .writer
            .call(move |connection| {
                take_slots(connection, (&tenant, &tags), &holder, now, expires)
                    .map_err(backend("acquiring concurrency slots"))
            })
            .await
    }

    fn renew_slots(&self, holder: &str, expires: Timestamp) -> StoreResult<()> {
        let holder = holder.to_owned();
        self.shared
            .writer
            .send(WriteOp::Call(Box::new(move |connection| {
                if let Err(error) = connection.execute(
                    "UPDATE concurrency_slots SET expires = ?2 WHERE holder = ?1",
                    params![holder, expires.0],
                ) {
                    tracing::error!("could not renew the slots of {holder}: {error}");
                }
            })))?;
        Ok(())
    }

    fn release_slots(&self, holder: &str) -> StoreResult<()> {
        let holder = holder.to_owned();
        self.shared
            .writer
            .send(WriteOp::Call(Box::new(move |connection| {
                if let Err(error) =
                    connection.execute("DELETE FROM concurrency_slots WHERE holder = ?1", [&holder])
                {
                    tracing::error!("could not release the slots of {holder}: {error}");
                }
            })))?;
        Ok(())
    }
}

#[async_trait]
impl Owners for SqliteStore {
    async fn register_owner(&self, owner: &OwnerRecord) -> StoreResult<()> {
        let owner = owner.clone();
        self.shared.writer.call(move |connection| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO owners (id, host, pid, machine, pid_started, started, heartbeat)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        owner.id,
                        owner.host,
                        owner.pid,
                        owner.machine,
                        owner.pid_started as i64,
                        owner.started.0,
                        owner.heartbeat.0
                    ],
                )
                .map_err(backend("registering this process as a run owner"))?;
            Ok(())
        })
        .await
    }

    fn heartbeat_owner(&self, owner: &str, now: Timestamp) -> StoreResult<()> {
        let owner = owner.to_owned();
        self.shared
            .writer
            .send(WriteOp::Call(Box::new(move |connection| {
                if let Err(error) = connection.execute(
                    "UPDATE owners SET heartbeat = max(heartbeat, ?2) WHERE id = ?1",
                    params![owner, now.0],
                ) {
                    tracing::error!("could not record the heartbeat of {owner}: {error}");
                }
            })))?;
        Ok(())
    }

    async fn owners(&self) -> StoreResult<Vec<OwnerRecord>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(
                "SELECT id, host, pid, machine, pid_started, started, heartbeat FROM owners ORDER BY started",
            )
            .map_err(backend("listing run owners"))?;
        let rows = statement
            .query_map([], |row| {
                Ok(OwnerRecord {
                    id: row.get(0)?,
                    host: row.get(1)?,
                    pid: row.get(2)?,
                    machine: row.get(3)?,
                    pid_started: row.get::<_, i64>(4)? as u64,
                    started: Timestamp(row.get(5)?),
                    heartbeat: Timestamp(row.get(6)?),
                })
            })
            .map_err(backend("listing run owners"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("listing run owners"))
    }

    async fn retire_owner(&self, owner: &str, ending: &Ending) -> StoreResult<EndedRuns> {
        self.shared
            .writer
            .end_runs(RunSelection::Owner(owner.to_owned()), ending.clone())
            .await
    }

    async fn set_flow_run_owner(&self, id: &FlowRunId, owner: &str) -> StoreResult<()> {
        let (id, owner, tenant) = (id.clone(), owner.to_owned(), self.tenant.clone());
        self.shared
            .writer
            .call(move |connection| {
                let updated = connection
                    .execute(
                        "UPDATE flow_runs SET owner = ?2 WHERE id = ?1 AND tenant = ?3",
                        params![id.as_str(), owner, tenant.as_str()],
                    )
                    .map_err(backend("giving a flow run to this process"))?;
                if updated == 0 {
                    return Err(StoreError::UnknownFlowRun(id.to_string()));
                }
                // A change for the feed (`runs inspect` shows who runs it).
                connection
                    .execute(
                        "INSERT INTO run_changes (run_ids) VALUES (?1)",
                        [id.as_str()],
                    )
                    .map_err(backend("logging a change"))?;
                Ok(())
            })
            .await
    }

    async fn end_flow_run_tree(&self, id: &FlowRunId, ending: &Ending) -> StoreResult<EndedRuns> {
        self.shared
            .writer
            .end_runs(
                RunSelection::FlowRunTree(id.clone(), self.tenant.clone()),
                ending.clone(),
            )
            .await
    }

    async fn request_cancel(&self, run_id: &str, reason: &str, at: Timestamp) -> StoreResult<()> {
        let (run_id, reason, tenant) = (run_id.to_owned(), reason.to_owned(), self.tenant.clone());
        self.shared.writer.call(move |connection| {
            // Only for a run of the tenant's.
            let owned: bool = connection
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM flow_runs WHERE id = ?1 AND tenant = ?2)
                         OR EXISTS (SELECT 1 FROM task_runs WHERE id = ?1 AND tenant = ?2)",
                )
                .and_then(|mut statement| {
                    statement.query_row([run_id.as_str(), tenant.as_str()], |row| row.get(0))
                })
                .map_err(backend("requesting a cancellation"))?;
            if !owned {
                return Err(if run_id.starts_with(FlowRunId::PREFIX) {
                    StoreError::UnknownFlowRun(run_id)
                } else {
                    StoreError::UnknownTaskRun(run_id)
                });
            }
            connection
                .execute(
                    "INSERT OR IGNORE INTO cancel_requests (run_id, reason, requested) VALUES (?1, ?2, ?3)",
                    params![run_id, reason, at.0],
                )
                .map_err(backend("requesting a cancellation"))?;
            Ok(())
        })
        .await
    }

    async fn cancel_requests(&self, owner: &str) -> StoreResult<Vec<CancelRequest>> {
        let connection = self.read().await?;
        let mut statement = connection
            .prepare_cached(
                "SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN flow_runs f ON f.id = c.run_id WHERE f.owner = ?1 AND f.ended IS NULL
                 UNION ALL
                 SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN task_runs t ON t.id = c.run_id WHERE t.owner = ?1 AND t.ended IS NULL",
            )
            .map_err(backend("reading cancellation requests"))?;
        let rows = statement
            .query_map([owner], |row| {
                Ok(CancelRequest {
                    run_id: row.get(0)?,
                    reason: row.get(1)?,
                    requested: Timestamp(row.get(2)?),
                })
            })
            .map_err(backend("reading cancellation requests"))?;
        rows.collect::<Result<_, _>>()
            .map_err(backend("reading cancellation requests"))
    }
}

/// Takes one slot of each limited tag among `tags` for `holder` until `expires`, or
/// nothing, on a connection inside a write transaction (a request, or a claim).
pub(crate) fn take_slots(
    connection: &rusqlite::Connection,
    (tenant, tags): (&weir_core::TenantId, &[String]),
    holder: &str,
    now: Timestamp,
    expires: Timestamp,
) -> rusqlite::Result<SlotRequest> {
    let mut limited = Vec::new();
    for tag in tags {
        let limit: Option<u32> = connection
            .prepare_cached(
                "SELECT slot_limit FROM concurrency_limits WHERE tenant = ?2 AND tag = ?1",
            )?
            .query_row([tag.as_str(), tenant.as_str()], |row| row.get(0))
            .optional()?;
        let Some(limit) = limit else { continue };
        if limit == 0 {
            return Ok(SlotRequest::Zero { tag: tag.clone() });
        }
        connection
            .prepare_cached(
                "DELETE FROM concurrency_slots WHERE tenant = ?3 AND tag = ?1 AND expires <= ?2",
            )?
            .execute(params![tag, now.0, tenant.as_str()])?;
        let held: u32 = connection
            .prepare_cached(
                "SELECT count(*) FROM concurrency_slots WHERE tenant = ?3 AND tag = ?1 AND holder != ?2",
            )?
            .query_row(params![tag, holder, tenant.as_str()], |row| row.get(0))?;
        if held >= limit {
            return Ok(SlotRequest::Full {
                tag: tag.clone(),
                limit,
            });
        }
        limited.push(tag);
    }
    for tag in limited {
        connection
                .prepare_cached(
                    "INSERT OR REPLACE INTO concurrency_slots (tenant, tag, holder, acquired, expires) VALUES (?5, ?1, ?2, ?3, ?4)",
                )?
                .execute(params![tag, holder, now.0, expires.0, tenant.as_str()])?;
    }
    Ok(SlotRequest::Granted)
}
