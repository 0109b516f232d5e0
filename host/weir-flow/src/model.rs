//! The flow graph, as built in Rust or loaded from a TOML file.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use weir_core::TaskOverrides;

/// The JSON type a parameter must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Any,
}

impl ParameterType {
    pub fn name(self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Number => "number",
            ParameterType::Boolean => "boolean",
            ParameterType::Array => "array",
            ParameterType::Object => "object",
            ParameterType::Any => "any",
        }
    }

    /// Every type a parameter may have.
    pub const ALL: [ParameterType; 7] = [
        ParameterType::String,
        ParameterType::Integer,
        ParameterType::Number,
        ParameterType::Boolean,
        ParameterType::Array,
        ParameterType::Object,
        ParameterType::Any,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub fn accepts(self, value: &Value) -> bool {
        match self {
            ParameterType::String => value.is_string(),
            ParameterType::Integer => value.is_i64() || value.is_u64(),
            ParameterType::Number => value.is_number(),
            ParameterType::Boolean => value.is_boolean(),
            ParameterType::Array => value.is_array(),
            ParameterType::Object => value.is_object(),
            ParameterType::Any => true,
        }
    }

    /// Reads a command-line value (`-p key=value`) as this type: text for strings,
    /// JSON for everything else (a bare word for `any` stays a string).
    pub fn parse_value(self, text: &str) -> Result<Value, String> {
        match self {
            ParameterType::String => Ok(Value::String(text.to_owned())),
            ParameterType::Any => {
                Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
            }
            kind => {
                let value: Value = serde_json::from_str(text)
                    .map_err(|_| format!("`{text}` is not a valid {}", kind.name()))?;
                if kind.accepts(&value) {
                    Ok(value)
                } else {
                    Err(format!("`{text}` is not a valid {}", kind.name()))
                }
            }
        }
    }
}

/// A flow parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub kind: ParameterType,
    /// None: the parameter is required.
    pub default: Option<Value>,
    pub description: Option<String>,
    /// A JSON Schema the value must also satisfy (see [`crate::schema`] for the subset).
    pub schema: Option<Value>,
}

/// What a node runs.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A task of one of the flow's plugins.
    Task {
        plugin: String,
        task: String,
        /// The input object, with `${...}` references.
        input: Value,
        /// Input fields holding lists to map over (one task run per element, zipped).
        map: Vec<String>,
        overrides: Box<TaskOverrides>,
        /// HTTP grants written with parameters (`${params.api}`), resolved when a run starts.
        http_templates: Vec<String>,
    },
    /// Another flow file, run as a subflow; its result is its output.
    Subflow {
        path: PathBuf,
        /// Its parameters, with `${...}` references.
        parameters: Value,
    },
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    /// Nodes that must finish first although their output is not used.
    pub wait_for: Vec<String>,
    /// Upstream nodes whose failure does not stop this node (their value becomes null).
    pub allow_failure: Vec<String>,
}

/// What a flow run returns.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowOutput {
    Node(String),
    Named(BTreeMap<String, String>),
}

/// A flow: parameters, plugins and a graph of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub name: String,
    pub description: Option<String>,
    pub version: Option<String>,
    /// Labels of its runs, to find them by (`weir serve`'s runs list filters by tag).
    pub tags: Vec<String>,
    pub parameters: BTreeMap<String, Parameter>,
    /// Alias → plugin file.
    pub plugins: BTreeMap<String, PathBuf>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub timeout: Option<Duration>,
    pub nodes: Vec<Node>,
    pub output: Option<FlowOutput>,
    /// The file it was loaded from, for messages and relative paths.
    pub source: Option<PathBuf>,
}

impl Flow {
    /// An empty flow to build on in Rust.
    pub fn new(name: impl Into<String>) -> Self {
        Flow {
            name: name.into(),
            description: None,
            version: None,
            tags: Vec::new(),
            parameters: BTreeMap::new(),
            plugins: BTreeMap::new(),
            retries: 0,
            retry_delay: Duration::ZERO,
            timeout: None,
            nodes: Vec::new(),
            output: None,
            source: None,
        }
    }

    pub fn parameter(
        mut self,
        name: impl Into<String>,
        kind: ParameterType,
        default: Option<Value>,
    ) -> Self {
        self.parameters.insert(
            name.into(),
            Parameter {
                kind,
                default,
                description: None,
                schema: None,
            },
        );
        self
    }

    pub fn plugin(mut self, alias: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.plugins.insert(alias.into(), path.into());
        self
    }

    /// Adds a task node: `task` is `plugin.task`.
    pub fn task(mut self, id: impl Into<String>, task: &str, input: Value) -> Self {
        let (plugin, task) = task.split_once('.').unwrap_or((task, ""));
        self.nodes.push(Node {
            id: id.into(),
            kind: NodeKind::Task {
                plugin: plugin.to_owned(),
                task: task.to_owned(),
                input,
                map: Vec::new(),
                overrides: Box::default(),
                http_templates: Vec::new(),
            },
            wait_for: Vec::new(),
            allow_failure: Vec::new(),
        });
        self
    }

    /// Adds a subflow node.
    pub fn subflow(
        mut self,
        id: impl Into<String>,
        path: impl Into<PathBuf>,
        parameters: Value,
    ) -> Self {
        self.nodes.push(Node {
            id: id.into(),
            kind: NodeKind::Subflow {
                path: path.into(),
                parameters,
            },
            wait_for: Vec::new(),
            allow_failure: Vec::new(),
        });
        self
    }

    /// Changes the last node added (map, wait_for, overrides…).
    pub fn with_last(mut self, change: impl FnOnce(&mut Node)) -> Self {
        if let Some(node) = self.nodes.last_mut() {
            change(node);
        }
        self
    }

    pub fn output(mut self, node: impl Into<String>) -> Self {
        self.output = Some(FlowOutput::Node(node.into()));
        self
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// Where the flow came from, for messages.
    pub fn origin(&self) -> String {
        self.source
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| format!("flow `{}`", self.name))
    }
}
