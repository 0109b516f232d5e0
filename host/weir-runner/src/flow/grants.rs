//! HTTP grants written with the flow's parameters (`http = ["${params.api}"]`), resolved
//! when a run starts.

use serde_json::{Map, Value};
use std::collections::HashMap;
use weir_core::HttpGrant;
use weir_flow::reference::{self, Reference, ResolveError, Target};
use weir_flow::{Flow, NodeKind};

/// Resolves the HTTP grants written with parameters (`http = ["${params.api}"]`).
pub(super) fn resolve_http_grants(
    flow: &Flow,
    parameters: &Map<String, Value>,
) -> Result<HashMap<String, Vec<HttpGrant>>, String> {
    let lookup = |reference: &Reference| -> Result<Value, ResolveError> {
        let root = match &reference.target {
            Target::Parameter(name) => parameters.get(name).cloned().unwrap_or(Value::Null),
            Target::Node(_) => Value::Null,
        };
        reference::follow(reference, &root).cloned()
    };
    let mut grants = HashMap::new();
    for node in &flow.nodes {
        let NodeKind::Task { http_templates, .. } = &node.kind else {
            continue;
        };
        for template in http_templates {
            let resolved = reference::resolve(&Value::String(template.clone()), &lookup)
                .map_err(|error| format!("node `{}`, field `http`: {error}", node.id))?;
            let text = match resolved {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let grant = HttpGrant::parse(&text).map_err(|message| {
                format!(
                    "node `{}`, field `http`: `{template}` gives {message}",
                    node.id
                )
            })?;
            grants
                .entry(node.id.clone())
                .or_insert_with(Vec::new)
                .push(grant);
        }
    }
    Ok(grants)
}

/// The first grant of the flow's nodes (with the HTTP grants written with parameters
/// resolved from `parameters`) that `ceilings` do not cover: its node and the grant as
/// people read it. A grant that does not resolve is left to the run to report.
pub fn grants_beyond(
    flow: &Flow,
    parameters: &Map<String, Value>,
    ceilings: &weir_core::Grants,
) -> Option<(String, String)> {
    let templated = resolve_http_grants(flow, parameters).unwrap_or_default();
    for node in &flow.nodes {
        let NodeKind::Task { overrides, .. } = &node.kind else {
            continue;
        };
        let mut grants = overrides.grants.clone();
        if let Some(resolved) = templated.get(&node.id) {
            grants.http.extend(resolved.iter().cloned());
        }
        let needed = crate::work::requirements(&grants);
        if let Some(beyond) = crate::worker::first_beyond(ceilings, &needed) {
            return Some((node.id.clone(), beyond));
        }
    }
    None
}
