//! Preparing a flow: validation, its plugins loaded once, every task checked to exist
//! with its needs granted, subflows loaded and prepared (a flow that includes itself is
//! refused), so that nothing runs unless everything can.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir_core::Need;
use weir_flow::{Flow, NodeKind};

use super::{BoxFuture, FlowRunError, FlowRunner, PreparedFlow};

impl FlowRunner {
    pub(super) fn prepare(
        self: &Arc<Self>,
        flow: Flow,
        mut stack: Vec<PathBuf>,
    ) -> BoxFuture<'_, Result<Arc<PreparedFlow>, FlowRunError>> {
        Box::pin(async move {
            let order = flow.validate()?;
            let mut plugins = HashMap::new();
            for (alias, path) in &flow.plugins {
                let plugin =
                    self.load_plugin(path)
                        .await
                        .map_err(|source| FlowRunError::Plugin {
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
                        let subflow = Flow::load(path).map_err(|error| {
                            flow.error(Some(&node.id), Some("flow"), error.to_string())
                        })?;
                        let prepared = self.prepare(subflow, stack.clone()).await?;
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
