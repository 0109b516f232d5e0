//! The runs list's task-run counts, remembered for flow runs that ended: an ended run's
//! task runs do not change until it is resumed, which gives it a new end. Counting a
//! map of 10,000 on every page of the list cost more than the rest of the page.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use weir_core::{FlowRunId, State, Timestamp};
use weir_runner::views::FlowRunSummary;
use weir_store::{FlowRunFilter, Store, StoreResult};

/// Ended runs remembered at most; past it the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

type Counts = BTreeMap<State, usize>;

#[derive(Default)]
pub(crate) struct EndedCounts {
    /// By flow run: its end and its counts then.
    remembered: Mutex<HashMap<FlowRunId, (Timestamp, Counts)>>,
}

impl EndedCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FlowRunId, (Timestamp, Counts)>> {
        self.remembered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The flow runs `filter` selects, each with its task runs counted by state.
    pub async fn summaries(
        &self,
        store: &dyn Store,
        filter: &FlowRunFilter,
    ) -> StoreResult<Vec<FlowRunSummary>> {
        let runs = store.flow_runs(filter).await?;
        let mut known: HashMap<FlowRunId, Counts> = HashMap::new();
        {
            let remembered = self.lock();
            for run in &runs {
                if let (true, Some(ended)) = (run.state.is_final(), run.ended)
                    && let Some((at, counts)) = remembered.get(&run.id)
                    && *at == ended
                {
                    known.insert(run.id.clone(), counts.clone());
                }
            }
        }
        let missing: Vec<FlowRunId> = runs
            .iter()
            .filter(|run| !known.contains_key(&run.id))
            .map(|run| run.id.clone())
            .collect();
        let mut counted = store.task_run_counts(&missing).await?;
        {
            let mut remembered = self.lock();
            for run in runs.iter().filter(|run| run.state.is_final()) {
                if let (Some(ended), Some(counts)) = (run.ended, counted.get(&run.id)) {
                    if remembered.len() >= MAX_REMEMBERED {
                        remembered.clear();
                    }
                    remembered.insert(run.id.clone(), (ended, counts.clone()));
                }
            }
        }
        Ok(runs
            .into_iter()
            .map(|run| FlowRunSummary {
                task_run_states: known
                    .remove(&run.id)
                    .or_else(|| counted.remove(&run.id))
                    .unwrap_or_default(),
                flow_run: run,
            })
            .collect())
    }
}
