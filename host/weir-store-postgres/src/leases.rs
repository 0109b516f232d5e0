//! Concurrency limits and their slots, and run owners: requests answered on a pooled
//! connection in a transaction of their own, after this store's queued writes are
//! committed (so they apply in order with them).

use async_trait::async_trait;
use weir_core::{FlowRunId, TaskRunId, Timestamp};
use weir_store::{
    CancelRequest, ConcurrencyLimit, EndedRuns, Ending, Leases, OwnerRecord, Owners, SlotRequest,
    StoreError, StoreResult,
};

use crate::writer::WriteOp;
use crate::{PostgresStore, backend};

/// Which runs an ending ends.
pub(crate) enum Selection {
    /// Every unfinished run of a process (and the process's record).
    Owner(String),
    /// A flow run of the tenant, its subflow runs, and the task runs of all of them.
    FlowRunTree(FlowRunId, weir_core::TenantId),
}

impl PostgresStore {
    /// Ending runs goes through the writer thread (in order with the queued writes, and
    /// on its own runtime): a process retires itself from `Drop`, when the caller's
    /// runtime may be shutting down and a pooled connection would never answer.
    async fn end_runs(&self, selection: Selection, ending: &Ending) -> StoreResult<EndedRuns> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared.writer.send(WriteOp::EndRuns {
            selection,
            ending: ending.clone(),
            reply,
        })?;
        answer.await.map_err(|_| {
            StoreError::backend("ending runs", "the store's writer thread has stopped")
        })?
    }
}

/// Ends the unfinished runs of a selection in one transaction, and frees their slots.
pub(crate) async fn end_runs(
    client: &mut tokio_postgres::Client,
    selection: &Selection,
    ending: &Ending,
) -> StoreResult<EndedRuns> {
    {
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        let (task_ids, flow_ids): (Vec<String>, Vec<String>) = match selection {
            Selection::Owner(owner) => {
                let owner = owner.as_str();
                // Runs it held from the queue are not ended: their leases run out at
                // once, and the next worker to claim one records the lost attempt.
                transaction
                    .execute(
                        "UPDATE work_queue SET lease_expires = 0 WHERE worker = $1 AND NOT done",
                        &[&owner],
                    )
                    .await
                    .map_err(backend("giving a stopped worker's runs back to the queue"))?;
                let tasks = transaction
                    .query(
                        "SELECT id FROM task_runs WHERE owner = $1 AND ended IS NULL
                           AND NOT EXISTS (SELECT 1 FROM work_queue q WHERE q.run_id = task_runs.id)
                         FOR UPDATE",
                        &[&owner],
                    )
                    .await
                    .map_err(backend("finding the runs to end"))?;
                let flows = transaction
                    .query(
                        "SELECT id FROM flow_runs WHERE owner = $1 AND ended IS NULL
                           AND NOT EXISTS (SELECT 1 FROM work_queue q WHERE q.run_id = flow_runs.id)
                         FOR UPDATE",
                        &[&owner],
                    )
                    .await
                    .map_err(backend("finding the runs to end"))?;
                (
                    tasks.iter().map(|row| row.get(0)).collect(),
                    flows.iter().map(|row| row.get(0)).collect(),
                )
            }
            Selection::FlowRunTree(root, tenant) => {
                // Another tenant's run is not there to end (its tree is all of one tenant).
                let tree: Vec<String> = transaction
                    .query(
                        "WITH RECURSIVE tree (id) AS (
                             SELECT id FROM flow_runs WHERE id = $1 AND tenant = $2
                             UNION SELECT f.id FROM flow_runs f JOIN tree t ON f.parent_flow_run_id = t.id
                         ) SELECT id FROM tree",
                        &[&root.as_str(), &tenant.as_str()],
                    )
                    .await
                    .map_err(backend("finding the runs to end"))?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                let tasks = transaction
                    .query(
                        "SELECT id FROM task_runs WHERE flow_run_id = ANY($1) AND ended IS NULL FOR UPDATE",
                        &[&tree],
                    )
                    .await
                    .map_err(backend("finding the runs to end"))?;
                let flows = transaction
                    .query(
                        "SELECT id FROM flow_runs WHERE id = ANY($1) AND ended IS NULL FOR UPDATE",
                        &[&tree],
                    )
                    .await
                    .map_err(backend("finding the runs to end"))?;
                (
                    tasks.iter().map(|row| row.get(0)).collect(),
                    flows.iter().map(|row| row.get(0)).collect(),
                )
            }
        };
        if let Selection::FlowRunTree(..) = selection {
            // Ended runs are no longer waiting for a worker.
            transaction
                .execute(
                    "DELETE FROM work_queue WHERE run_id = ANY($1) OR run_id = ANY($2)",
                    &[&task_ids, &flow_ids],
                )
                .await
                .map_err(backend("taking ended runs off the queue"))?;
        }
        let state = ending.state.as_str();
        let ended_tasks: Vec<String> = transaction
            .query(
                "WITH ended AS (
                     UPDATE task_runs SET state = $2, state_message = $3, ended = $4, result_digest = NULL,
                         cache_key = NULL
                     WHERE id = ANY($1) AND ended IS NULL RETURNING id, attempts)
                 INSERT INTO task_run_states (task_run_id, seq, state, message, attempt, at)
                 SELECT e.id, coalesce((SELECT max(s.seq) FROM task_run_states s WHERE s.task_run_id = e.id), 0) + 1,
                        $2, $3, e.attempts, $4
                 FROM ended e RETURNING task_run_id",
                &[&task_ids, &state, &ending.message, &ending.at.0],
            )
            .await
            .map_err(backend("ending task runs"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        transaction
            .execute(
                "DELETE FROM concurrency_slots WHERE holder = ANY($1)",
                &[&ended_tasks],
            )
            .await
            .map_err(backend("freeing the slots of ended runs"))?;
        let ended_flows: Vec<String> = transaction
            .query(
                "WITH ended AS (
                     UPDATE flow_runs SET state = $2, state_message = $3, ended = $4
                     WHERE id = ANY($1) AND ended IS NULL RETURNING id, attempts)
                 INSERT INTO flow_run_states (flow_run_id, seq, state, message, attempt, at)
                 SELECT e.id, coalesce((SELECT max(s.seq) FROM flow_run_states s WHERE s.flow_run_id = e.id), 0) + 1,
                        $2, $3, e.attempts, $4
                 FROM ended e RETURNING flow_run_id",
                &[&flow_ids, &state, &ending.message, &ending.at.0],
            )
            .await
            .map_err(backend("ending flow runs"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let changed: std::collections::BTreeSet<&str> = ended_tasks
            .iter()
            .chain(&ended_flows)
            .map(String::as_str)
            .collect();
        if !changed.is_empty() {
            transaction
                .execute(
                    "INSERT INTO run_changes (run_ids) VALUES ($1)",
                    &[&weir_store::change_log::entry(changed)],
                )
                .await
                .map_err(backend("logging the ended runs"))?;
        }
        if let Selection::Owner(owner) = selection {
            let owner = owner.as_str();
            // Its finished runs too: a process killed between finishing a run and
            // releasing its slot leaves the slot behind.
            transaction
                .execute(
                    "DELETE FROM concurrency_slots s USING task_runs t WHERE t.id = s.holder AND t.owner = $1",
                    &[&owner],
                )
                .await
                .map_err(backend("freeing the slots of a stopped process"))?;
            transaction
                .execute("DELETE FROM owners WHERE id = $1", &[&owner])
                .await
                .map_err(backend("forgetting a run owner"))?;
            transaction
                .execute("DELETE FROM workers WHERE owner = $1", &[&owner])
                .await
                .map_err(backend("forgetting a worker"))?;
        }
        transaction
            .commit()
            .await
            .map_err(backend("committing the ending of runs"))?;
        Ok(EndedRuns {
            flow_runs: ended_flows
                .into_iter()
                .map(FlowRunId::from_string)
                .collect(),
            task_runs: ended_tasks
                .into_iter()
                .map(TaskRunId::from_string)
                .collect(),
        })
    }
}

#[async_trait]
impl Leases for PostgresStore {
    async fn set_concurrency_limit(
        &self,
        tag: &str,
        limit: u32,
        now: Timestamp,
    ) -> StoreResult<()> {
        let client = self.read().await?;
        client
            .execute(
                "INSERT INTO concurrency_limits (tenant, tag, slot_limit, created) VALUES ($4, $1, $2, $3)
                 ON CONFLICT (tenant, tag) DO UPDATE SET slot_limit = excluded.slot_limit",
                &[
                    &tag,
                    &i32::try_from(limit).unwrap_or(i32::MAX),
                    &now.0,
                    &self.tenant(),
                ],
            )
            .await
            .map_err(backend("setting a concurrency limit"))?;
        Ok(())
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
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT l.tag, l.slot_limit, l.created,
                        coalesce(array_agg(s.holder ORDER BY s.acquired) FILTER (WHERE s.holder IS NOT NULL), '{}')
                 FROM concurrency_limits l
                 LEFT JOIN concurrency_slots s ON s.tenant = l.tenant AND s.tag = l.tag AND s.expires > $1
                 WHERE l.tenant = $2
                 GROUP BY l.tag, l.slot_limit, l.created ORDER BY l.tag",
                &[&now.0, &self.tenant()],
            )
            .await
            .map_err(backend("listing concurrency limits"))?;
        Ok(rows
            .iter()
            .map(|row| ConcurrencyLimit {
                tag: row.get(0),
                limit: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
                created: Timestamp(row.get(2)),
                holders: row.get(3),
            })
            .collect())
    }

    async fn delete_concurrency_limit(&self, tag: &str) -> StoreResult<bool> {
        let mut client = self.read().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        transaction
            .execute(
                "DELETE FROM concurrency_slots WHERE tenant = $2 AND tag = $1",
                &[&tag, &self.tenant()],
            )
            .await
            .map_err(backend("deleting a concurrency limit"))?;
        let deleted = transaction
            .execute(
                "DELETE FROM concurrency_limits WHERE tenant = $2 AND tag = $1",
                &[&tag, &self.tenant()],
            )
            .await
            .map_err(backend("deleting a concurrency limit"))?;
        transaction
            .commit()
            .await
            .map_err(backend("deleting a concurrency limit"))?;
        Ok(deleted > 0)
    }

    async fn reset_concurrency_limit(&self, tag: &str) -> StoreResult<usize> {
        let client = self.read().await?;
        let freed = client
            .execute(
                "DELETE FROM concurrency_slots WHERE tenant = $2 AND tag = $1",
                &[&tag, &self.tenant()],
            )
            .await
            .map_err(backend("resetting a concurrency limit"))?;
        Ok(freed as usize)
    }

    async fn acquire_slots(
        &self,
        tags: &[String],
        holder: &str,
        now: Timestamp,
        expires: Timestamp,
    ) -> StoreResult<SlotRequest> {
        let mut client = self.read().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(backend("starting a transaction"))?;
        let answer = take_slots(&transaction, (&self.tenant, tags), holder, now, expires)
            .await
            .map_err(backend("acquiring concurrency slots"))?;
        if answer != SlotRequest::Granted {
            return Ok(answer);
        }
        transaction
            .commit()
            .await
            .map_err(backend("committing concurrency slots"))?;
        Ok(SlotRequest::Granted)
    }

    fn renew_slots(&self, holder: &str, expires: Timestamp) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::RenewSlots {
            holder: holder.to_owned(),
            expires,
        })?;
        Ok(())
    }

    fn release_slots(&self, holder: &str) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::ReleaseSlots {
            holder: holder.to_owned(),
        })?;
        Ok(())
    }
}

#[async_trait]
impl Owners for PostgresStore {
    async fn register_owner(&self, owner: &OwnerRecord) -> StoreResult<()> {
        let client = self.read().await?;
        client
            .execute(
                "INSERT INTO owners (id, host, pid, machine, pid_started, started, heartbeat)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                     machine = excluded.machine, pid_started = excluded.pid_started,
                     started = excluded.started, heartbeat = excluded.heartbeat",
                &[
                    &owner.id,
                    &owner.host,
                    &i64::from(owner.pid),
                    &owner.machine,
                    &(owner.pid_started as i64),
                    &owner.started.0,
                    &owner.heartbeat.0,
                ],
            )
            .await
            .map_err(backend("registering this process as a run owner"))?;
        Ok(())
    }

    fn heartbeat_owner(&self, owner: &str, now: Timestamp) -> StoreResult<()> {
        self.shared.writer.send(WriteOp::Heartbeat {
            owner: owner.to_owned(),
            at: now,
        })?;
        Ok(())
    }

    async fn owners(&self) -> StoreResult<Vec<OwnerRecord>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT id, host, pid, machine, pid_started, started, heartbeat FROM owners ORDER BY started",
                &[],
            )
            .await
            .map_err(backend("listing run owners"))?;
        Ok(rows
            .iter()
            .map(|row| OwnerRecord {
                id: row.get(0),
                host: row.get(1),
                pid: u32::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                machine: row.get(3),
                pid_started: row.get::<_, i64>(4) as u64,
                started: Timestamp(row.get(5)),
                heartbeat: Timestamp(row.get(6)),
            })
            .collect())
    }

    async fn retire_owner(&self, owner: &str, ending: &Ending) -> StoreResult<EndedRuns> {
        self.end_runs(Selection::Owner(owner.to_owned()), ending)
            .await
    }

    async fn set_flow_run_owner(&self, id: &FlowRunId, owner: &str) -> StoreResult<()> {
        let client = self.read().await?;
        let updated = client
            .execute(
                "WITH updated AS (UPDATE flow_runs SET owner = $2 WHERE id = $1 AND tenant = $3 RETURNING id)
                 INSERT INTO run_changes (run_ids) SELECT id FROM updated",
                &[&id.as_str(), &owner, &self.tenant()],
            )
            .await
            .map_err(backend("giving a flow run to this process"))?;
        if updated == 0 {
            return Err(StoreError::UnknownFlowRun(id.to_string()));
        }
        Ok(())
    }

    async fn end_flow_run_tree(&self, id: &FlowRunId, ending: &Ending) -> StoreResult<EndedRuns> {
        self.end_runs(
            Selection::FlowRunTree(id.clone(), self.tenant.clone()),
            ending,
        )
        .await
    }

    async fn request_cancel(&self, run_id: &str, reason: &str, at: Timestamp) -> StoreResult<()> {
        let client = self.read().await?;
        // Only for a run of the tenant's.
        let owned: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM flow_runs WHERE id = $1 AND tenant = $2)
                     OR EXISTS (SELECT 1 FROM task_runs WHERE id = $1 AND tenant = $2)",
                &[&run_id, &self.tenant()],
            )
            .await
            .map_err(backend("requesting a cancellation"))?
            .get(0);
        if !owned {
            return Err(if run_id.starts_with(FlowRunId::PREFIX) {
                StoreError::UnknownFlowRun(run_id.to_owned())
            } else {
                StoreError::UnknownTaskRun(run_id.to_owned())
            });
        }
        client
            .execute(
                "INSERT INTO cancel_requests (run_id, reason, requested) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&run_id, &reason, &at.0],
            )
            .await
            .map_err(backend("requesting a cancellation"))?;
        Ok(())
    }

    async fn cancel_requests(&self, owner: &str) -> StoreResult<Vec<CancelRequest>> {
        let client = self.read().await?;
        let rows = client
            .query(
                "SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN flow_runs f ON f.id = c.run_id WHERE f.owner = $1 AND f.ended IS NULL
                 UNION ALL
                 SELECT c.run_id, c.reason, c.requested FROM cancel_requests c
                   JOIN task_runs t ON t.id = c.run_id WHERE t.owner = $1 AND t.ended IS NULL",
                &[&owner],
            )
            .await
            .map_err(backend("reading cancellation requests"))?;
        Ok(rows
            .iter()
            .map(|row| CancelRequest {
                run_id: row.get(0),
                reason: row.get(1),
                requested: Timestamp(row.get(2)),
            })
            .collect())
    }
}

/// Takes one slot of each limited tag among `tags` for `holder` until `expires`, or
/// nothing, inside a transaction (a request, or a claim) that the caller commits.
pub(crate) async fn take_slots(
    transaction: &tokio_postgres::Transaction<'_>,
    (tenant, tags): (&weir_core::TenantId, &[String]),
    holder: &str,
    now: Timestamp,
    expires: Timestamp,
) -> Result<SlotRequest, tokio_postgres::Error> {
    // The limit rows are locked (in tag order, so two holders cannot deadlock): two
    // processes asking for the last slot of a tag count it one after the other.
    let limits = transaction
        .query(
            "SELECT tag, slot_limit FROM concurrency_limits WHERE tenant = $2 AND tag = ANY($1)
                 ORDER BY tag FOR UPDATE",
            &[&tags, &tenant.as_str()],
        )
        .await?;
    let limit_of = |tag: &str| {
        limits
            .iter()
            .find(|row| row.get::<_, &str>(0) == tag)
            .map(|row| u32::try_from(row.get::<_, i32>(1)).unwrap_or(0))
    };
    let mut limited = Vec::new();
    for tag in tags {
        let Some(limit) = limit_of(tag) else { continue };
        if limit == 0 {
            return Ok(SlotRequest::Zero { tag: tag.clone() });
        }
        transaction
            .execute(
                "DELETE FROM concurrency_slots WHERE tenant = $3 AND tag = $1 AND expires <= $2",
                &[&tag, &now.0, &tenant.as_str()],
            )
            .await?;
        let held: i64 = transaction
            .query_one(
                "SELECT count(*) FROM concurrency_slots WHERE tenant = $3 AND tag = $1 AND holder != $2",
                &[&tag, &holder, &tenant.as_str()],
            )
            .await?
            .get(0);
        if held >= i64::from(limit) {
            return Ok(SlotRequest::Full {
                tag: tag.clone(),
                limit,
            });
        }
        limited.push(tag);
    }
    for tag in limited {
        transaction
                .execute(
                    "INSERT INTO concurrency_slots (tenant, tag, holder, acquired, expires) VALUES ($5, $1, $2, $3, $4)
                     ON CONFLICT (tenant, tag, holder) DO UPDATE SET acquired = excluded.acquired,
                         expires = excluded.expires",
                    &[&tag, &holder, &now.0, &expires.0, &tenant.as_str()],
                )
                .await
                ?;
    }
    Ok(SlotRequest::Granted)
}
