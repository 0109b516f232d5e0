//! Checks made before anything runs: every error names the file, the node and the field.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::model::{Flow, FlowOutput, Node, NodeKind};
use crate::reference::{Target, references_in};

/// A flow that cannot run, and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FlowError {
    /// The flow file (or the flow's name when built in Rust).
    pub origin: String,
    pub node: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(node) = &self.node {
            write!(f, ": node `{node}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Flow {
    /// An error about this flow, naming its origin and, when given, the node and field.
    pub fn error(
        &self,
        node: Option<&str>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> FlowError {
        FlowError {
            origin: self.origin(),
            node: node.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The nodes `id` depends on: those its input references, and its `wait_for`.
    pub fn dependencies(&self, id: &str) -> Vec<String> {
        match self.node(id) {
            Some(node) => node.dependencies(),
            None => Vec::new(),
        }
    }

    /// Checks the whole graph: names, plugins, references, maps, cycles, output, defaults.
    /// Returns the nodes in an order where each comes after its dependencies.
    pub fn validate(&self) -> Result<Vec<String>, FlowError> {
        let ids: BTreeSet<&str> = self.nodes.iter().map(|node| node.id.as_str()).collect();
        if self.nodes.is_empty() {
            return Err(self.error(None, Some("nodes"), "the flow has no nodes"));
        }
        for (name, parameter) in &self.parameters {
            if let Some(default) = &parameter.default {
                if !parameter.kind.accepts(default) {
                    return Err(self.error(
                        None,
                        Some(&format!("parameters.{name}.default")),
                        format!("the default {default} is not a {}", parameter.kind.name()),
                    ));
                }
                if let Some(schema) = &parameter.schema {
                    crate::schema::check(schema, default).map_err(|message| {
                        self.error(None, Some(&format!("parameters.{name}.default")), message)
                    })?;
                }
            }
        }
        let mut seen = BTreeSet::new();
        for node in &self.nodes {
            let id = node.id.as_str();
            let valid_name = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && id != "params";
            if !valid_name {
                return Err(self.error(
                    Some(id),
                    None,
                    "node names use letters, digits, `_` and `-` (and `params` is reserved)",
                ));
            }
            if !seen.insert(id) {
                return Err(self.error(Some(id), None, "two nodes have this name"));
            }
            let (template, template_field) = match &node.kind {
                NodeKind::Task {
                    plugin,
                    task,
                    input,
                    map,
                    http_templates,
                    ..
                } => {
                    for template in http_templates {
                        let references =
                            references_in(&Value::String(template.clone())).map_err(|error| {
                                self.error(Some(id), Some("http"), error.to_string())
                            })?;
                        for reference in references {
                            let known = matches!(&reference.target, Target::Parameter(name) if self.parameters.contains_key(name));
                            if !known {
                                return Err(self.error(
                                    Some(id),
                                    Some("http"),
                                    format!(
                                        "`{reference}`: grants may use the flow's parameters only"
                                    ),
                                ));
                            }
                        }
                    }
                    if !self.plugins.contains_key(plugin) {
                        let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                        return Err(self.error(
                            Some(id),
                            Some("task"),
                            format!(
                                "`{plugin}.{task}` names no plugin of this flow (plugins: {})",
                                list_or_none(&known)
                            ),
                        ));
                    }
                    if task.is_empty() {
                        return Err(self.error(
                            Some(id),
                            Some("task"),
                            "write the task as `plugin.task`",
                        ));
                    }
                    let Value::Object(fields) = input else {
                        return Err(self.error(
                            Some(id),
                            Some("input"),
                            "the input must be a table (a JSON object)",
                        ));
                    };
                    for mapped in map {
                        if !fields.contains_key(mapped) {
                            return Err(self.error(
                                Some(id),
                                Some("map"),
                                format!("`{mapped}` is not a field of the input"),
                            ));
                        }
                    }
                    (input, "input")
                }
                NodeKind::Subflow { parameters, .. } => {
                    if !parameters.is_object() {
                        return Err(self.error(
                            Some(id),
                            Some("parameters"),
                            "the parameters must be a table",
                        ));
                    }
                    (parameters, "parameters")
                }
            };
            let references = references_in(template)
                .map_err(|error| self.error(Some(id), Some(template_field), error.to_string()))?;
            for reference in references {
                match &reference.target {
                    Target::Parameter(name) if !self.parameters.contains_key(name) => {
                        let known: Vec<&str> = self.parameters.keys().map(String::as_str).collect();
                        return Err(self.error(
                            Some(id),
                            Some(template_field),
                            format!(
                                "`{reference}` names no parameter of this flow (parameters: {})",
                                list_or_none(&known)
                            ),
                        ));
                    }
                    Target::Node(upstream) if !ids.contains(upstream.as_str()) => {
                        return Err(self.error(
                            Some(id),
                            Some(template_field),
                            format!(
                                "`{reference}` names no node of this flow (nodes: {}; parameters are `${{params.NAME}}`)",
                                ids.iter().copied().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    Target::Node(upstream) if upstream == id => {
                        return Err(self.error(
                            Some(id),
                            Some(template_field),
                            format!("`{reference}` refers to the node itself"),
                        ));
                    }
                    _ => {}
                }
            }
            for upstream in &node.wait_for {
                if !ids.contains(upstream.as_str()) {
                    return Err(self.error(
                        Some(id),
                        Some("wait_for"),
                        format!("`{upstream}` names no node of this flow"),
                    ));
                }
            }
            let dependencies = node.dependencies();
            for upstream in &node.allow_failure {
                if !dependencies.contains(upstream) {
                    return Err(self.error(
                        Some(id),
                        Some("allow_failure"),
                        format!("`{upstream}` is not an upstream of this node (reference it or list it in wait_for)"),
                    ));
                }
            }
        }
        match &self.output {
            Some(FlowOutput::Node(node)) if !ids.contains(node.as_str()) => {
                return Err(self.error(
                    None,
                    Some("output"),
                    format!("`{node}` names no node of this flow"),
                ));
            }
            Some(FlowOutput::Named(named)) => {
                for (name, node) in named {
                    if !ids.contains(node.as_str()) {
                        return Err(self.error(
                            None,
                            Some(&format!("output.{name}")),
                            format!("`{node}` names no node of this flow"),
                        ));
                    }
                }
            }
            _ => {}
        }
        self.topological_order()
    }

    /// Kahn's algorithm, in waves: the nodes ready together keep the file's order. A cycle is
    /// an error that lists the nodes on it. Linear in nodes and edges (up to sorting each
    /// wave), so that a flow of thousands of nodes validates in milliseconds.
    fn topological_order(&self) -> Result<Vec<String>, FlowError> {
        let position: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.id.as_str(), index))
            .collect();
        let mut unfinished = vec![0usize; self.nodes.len()];
        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (index, node) in self.nodes.iter().enumerate() {
            for upstream in node.dependencies() {
                if let Some(&upstream) = position.get(upstream.as_str()) {
                    unfinished[index] += 1;
                    downstream[upstream].push(index);
                }
            }
        }
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut wave: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| unfinished[index] == 0)
            .collect();
        while !wave.is_empty() {
            let mut next = Vec::new();
            for &index in &wave {
                for &after in &downstream[index] {
                    unfinished[after] -= 1;
                    if unfinished[after] == 0 {
                        next.push(after);
                    }
                }
            }
            order.extend(wave.iter().map(|&index| self.nodes[index].id.clone()));
            next.sort_unstable();
            wave = next;
        }
        if order.len() < self.nodes.len() {
            let mut cycle: Vec<&str> = (0..self.nodes.len())
                .filter(|&index| unfinished[index] > 0)
                .map(|index| self.nodes[index].id.as_str())
                .collect();
            cycle.sort_unstable();
            return Err(self.error(
                Some(cycle[0]),
                None,
                format!("the graph has a cycle through {}", cycle.join(" → ")),
            ));
        }
        Ok(order)
    }

    /// The parameter values of a run: the given ones checked against their types, the
    /// defaults for the rest. Unknown and missing parameters are errors.
    pub fn bind_parameters(
        &self,
        given: &Map<String, Value>,
    ) -> Result<Map<String, Value>, FlowError> {
        for name in given.keys() {
            if !self.parameters.contains_key(name) {
                let known: Vec<&str> = self.parameters.keys().map(String::as_str).collect();
                return Err(self.error(
                    None,
                    Some(&format!("parameters.{name}")),
                    format!(
                        "the flow has no parameter `{name}` (parameters: {})",
                        list_or_none(&known)
                    ),
                ));
            }
        }
        let mut bound = Map::new();
        for (name, parameter) in &self.parameters {
            let value = match (given.get(name), &parameter.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(self.error(
                        None,
                        Some(&format!("parameters.{name}")),
                        format!("the parameter `{name}` is required (pass -p {name}=VALUE)"),
                    ));
                }
            };
            if !parameter.kind.accepts(&value) {
                return Err(self.error(
                    None,
                    Some(&format!("parameters.{name}")),
                    format!("{value} is not a {}", parameter.kind.name()),
                ));
            }
            if let Some(schema) = &parameter.schema {
                crate::schema::check(schema, &value).map_err(|message| {
                    self.error(None, Some(&format!("parameters.{name}")), message)
                })?;
            }
            bound.insert(name.clone(), value);
        }
        Ok(bound)
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl Node {
    /// The nodes whose output this one's input (or subflow parameters) references.
    pub fn inputs_from(&self) -> Vec<String> {
        let template = match &self.kind {
            NodeKind::Task { input, .. } => input,
            NodeKind::Subflow { parameters, .. } => parameters,
        };
        let mut found = BTreeSet::new();
        for reference in references_in(template).unwrap_or_default() {
            if let Target::Node(upstream) = reference.target {
                found.insert(upstream);
            }
        }
        found.into_iter().collect()
    }

    /// The nodes this one depends on: those its input references, and its `wait_for`.
    pub fn dependencies(&self) -> Vec<String> {
        let mut found: BTreeSet<String> = self.inputs_from().into_iter().collect();
        found.extend(self.wait_for.iter().cloned());
        found.into_iter().collect()
    }
}
