//! Preparing a flow: validation, its plugins loaded once, every task checked to exist
//! with its needs granted, subflows loaded and prepared (a flow that includes itself is
//! refused), so that nothing runs unless everything can.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir_core::Need;
use weir_flow::{Flow, NodeKind};

use super::{BoxFuture, FlowRunError, FlowRunner, PreparedFlow};
use crate::work::FlowBundle;

/// Where a flow's files and plugins come from.
pub(super) enum Source<'a> {
    /// Paths on this machine.
    Files,
    /// A submitted flow's bundle: flow files by path, plugins by digest from the store.
    Bundle(&'a FlowBundle),
}

impl Source<'_> {
    fn subflow(&self, path: &std::path::Path) -> Result<Flow, weir_flow::FlowError> {
        match self {
            Source::Files => Flow::load(path),
            Source::Bundle(bundle) => {
                let key = path.display().to_string();
                let text = bundle.flows.get(&key).ok_or_else(|| weir_flow::FlowError {
                    origin: key.clone(),
                    node: None,
                    field: None,
                    message: "the submitted run's bundle has no such flow file".into(),
                })?;
                Flow::from_toml(text, path)
            }
        }
    }
}

impl FlowRunner {
    pub(super) fn prepare<'a>(
        self: &'a Arc<Self>,
        flow: Flow,
        mut stack: Vec<PathBuf>,
        source: &'a Source<'a>,
    ) -> BoxFuture<'a, Result<Arc<PreparedFlow>, FlowRunError>> {
        Box::pin(async move {
            let order = flow.validate()?;
            let mut plugins = HashMap::new();
            for (alias, path) in &flow.plugins {
                let loaded = match source {
                    Source::Files => self.load_plugin(path).await,
                    Source::Bundle(bundle) => self.fetch_plugin(bundle, path).await,
                };
                let plugin = loaded.map_err(|source| FlowRunError::Plugin {
                    origin: flow.origin(),
                    alias: alias.clone(),
                    source,
                })?;
                plugins.insert(alias.clone(), plugin);
            }
            if let Some(source) = &flow.source {
                stack.push(source.canonicalize().unwrap_or_else(|_| source.clone()));
            }
            let mut subflows = HashMap::new();
            for node in &flow.nodes {
                match &node.kind {
                    NodeKind::Task {
                        plugin,
                        task,
                        overrides,
                        http_templates,
                        ..
                    } => {
                        let loaded = &plugins[plugin];
                        if loaded.task(task).is_none() {
                            let tasks: Vec<&str> = loaded
                                .tasks()
                                .iter()
                                .map(|info| info.name.as_str())
                                .collect();
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("task"),
                                    format!(
                                        "plugin `{plugin}` has no task `{task}` (its tasks: {})",
                                        tasks.join(", ")
                                    ),
                                )
                                .into());
                        }

                        // HTTP grants written with parameters are only known when a run
                        // starts; the runner checks those needs then.
                        let needs: Vec<Need> = loaded
                            .task(task)
                            .expect("checked above")
                            .needs
                            .iter()
                            .filter(|need| {
                                http_templates.is_empty()
                                    || !matches!(need, Need::AnyHttp | Need::Http(_))
                            })
                            .cloned()
                            .collect();
                        if let Some(need) = overrides.grants.first_missing(&needs) {
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("task"),
                                    format!(
                                        "task `{task}` needs {}, which this node is not granted",
                                        need.how_to_grant()
                                    ),
                                )
                                .into());
                        }
                    }
                    NodeKind::Subflow { path, .. } => {
                        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
                        if stack.contains(&canonical) {
                            return Err(flow
                                .error(
                                    Some(&node.id),
                                    Some("flow"),
                                    format!(
                                        "{} runs itself as a subflow (directly or through others)",
                                        path.display()
                                    ),
                                )
                                .into());
                        }
                        let subflow = source.subflow(path).map_err(|error| {
                            flow.error(Some(&node.id), Some("flow"), error.to_string())
                        })?;
                        let prepared = self.prepare(subflow, stack.clone(), source).await?;
                        subflows.insert(node.id.clone(), prepared);
                    }
                }
            }
            let positions = flow
                .nodes
                .iter()
                .enumerate()
                .map(|(position, node)| (node.id.clone(), position))
                .collect();
            Ok(Arc::new(PreparedFlow {
                flow,
                order,
                plugins,
                subflows,
                positions,
            }))
        })
    }
}
