//! What a queued run carries for the worker that claims it (the queue row's `spec`), and
//! the bundle of flow files and plugin digests a submitted flow run is driven from on any
//! machine.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_core::{Grants, TaskOverrides};
use weir_store::Requirements;

/// The spec of a queued task run: with its record (input, node, element, name), all a
/// worker needs to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskSpec {
    /// The plugin's digest: its bytes are a blob of the store.
    pub(crate) plugin: String,
    pub(crate) plugin_name: String,
    pub(crate) task: String,
    #[serde(default)]
    pub(crate) overrides: TaskOverrides,
    /// The flow run's parameters, for the task's context.
    #[serde(default)]
    pub(crate) flow_run: Option<FlowRunContext>,
}

/// The flow run a queued task run belongs to, as its context shows it (its parameters
/// are read from the flow run's record: copied into every task run's spec, a map over a
/// large parameter would write it once per element).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FlowRunContext {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// The spec of a queued flow run: which flow of which bundle to drive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FlowSpec {
    /// The blob holding the [`FlowBundle`].
    pub(crate) bundle: String,
    /// The flow's file, a key of the bundle's `flows`.
    pub(crate) path: String,
}

/// A submitted flow and its subflows, so that any worker can prepare them: each flow
/// file's text by the path it was read from, and each plugin's digest by its path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FlowBundle {
    pub(crate) flows: BTreeMap<String, String>,
    pub(crate) plugins: BTreeMap<String, String>,
}

/// The most bytes of a bundle a worker reads: flow files are small; a bundle this large
/// is not one weir wrote.
pub(crate) const MAX_BUNDLE_BYTES: usize = 16 << 20;

/// What a run's grants ask of the worker that runs it.
pub(crate) fn requirements(grants: &Grants) -> Requirements {
    Requirements {
        dirs: grants
            .dirs
            .iter()
            .map(|dir| {
                let host = dir.host.display().to_string();
                if dir.writable {
                    format!("{host}:rw")
                } else {
                    host
                }
            })
            .collect(),
        env: grants.env.clone(),
        http: grants.http.iter().map(ToString::to_string).collect(),
    }
}
