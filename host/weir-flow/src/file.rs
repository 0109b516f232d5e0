//! The flow file: TOML, versioned, with unknown fields refused so a typo is an error that
//! names the field.
//!
//! ```toml
//! format = 1
//! name = "diamond"
//! output = "total"
//!
//! [parameters.x]
//! type = "integer"
//! default = 3
//!
//! [plugins]
//! arith = "plugins/arith.wasm"          # relative to this file
//!
//! [nodes.double]
//! task = "arith.multiply"
//! input = { a = "${params.x}", b = 2 }
//!
//! [nodes.total]
//! task = "arith.add"
//! input = { a = "${double}", b = 1 }
//! retries = 2
//! timeout = "5s"
//! ```

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_core::{
    CachePolicy, DirGrant, Grants, HttpGrant, RetryDelays, TaskOverrides, parse_duration,
    parse_size,
};

use crate::model::{Flow, FlowOutput, Node, NodeKind, Parameter, ParameterType};
use crate::validate::FlowError;

/// The format versions this weir reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    format: u32,
    name: String,
    description: Option<String>,
    version: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    parameters: BTreeMap<String, ParameterFile>,
    #[serde(default)]
    plugins: BTreeMap<String, PathBuf>,
    #[serde(default)]
    retries: u32,
    retry_delay: Option<String>,
    timeout: Option<String>,
    output: Option<OutputFile>,
    #[serde(default)]
    nodes: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterFile {
    #[serde(rename = "type", default = "any_type")]
    kind: String,
    default: Option<Value>,
    description: Option<String>,
    /// A JSON Schema (subset) the value must satisfy.
    schema: Option<Value>,
}

fn any_type() -> String {
    "any".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OutputFile {
    Node(String),
    Named(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DelayFile {
    One(DurationFile),
    PerRetry(Vec<DurationFile>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationFile {
    Seconds(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    task: Option<String>,
    input: Option<Value>,
    flow: Option<PathBuf>,
    parameters: Option<Value>,
    #[serde(default)]
    map: Vec<String>,
    #[serde(default)]
    wait_for: Vec<String>,
    #[serde(default)]
    allow_failure: Vec<String>,
    retries: Option<u32>,
    retry_delay: Option<DelayFile>,
    retry_backoff: Option<DurationFile>,
    retry_backoff_max: Option<DurationFile>,
    retry_jitter: Option<f64>,
    timeout: Option<DurationFile>,
    memory: Option<String>,
    fuel: Option<u64>,
    cache: Option<String>,
    cache_expiration: Option<DurationFile>,
    #[serde(default)]
    refresh_cache: bool,
    #[serde(default)]
    tags: Vec<String>,
    run_name: Option<String>,
    log_prints: Option<bool>,
    /// Directories granted: `HOST:GUEST[:ro|rw]`, HOST relative to the flow file.
    #[serde(default)]
    dirs: Vec<String>,
    /// Environment variables granted, by name.
    #[serde(default)]
    env: Vec<String>,
    /// Hosts the task may reach over HTTP: `host`, `host:port`, `scheme://host[:port]`.
    #[serde(default)]
    http: Vec<String>,
}

impl DurationFile {
    fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationFile::Seconds(seconds) => Duration::try_from_secs_f64(*seconds)
                .map_err(|_| format!("{seconds} is not a valid number of seconds")),
            DurationFile::Text(text) => parse_duration(text).map_err(|error| error.to_string()),
        }
    }
}

impl Flow {
    /// Reads and validates a flow file. Plugin and subflow paths are relative to the file.
    pub fn load(path: &Path) -> Result<Flow, FlowError> {
        let origin = path.display().to_string();
        let error = |message: String| FlowError {
            origin: origin.clone(),
            node: None,
            field: None,
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|io| error(format!("cannot read the flow file: {io}")))?;
        let flow = Flow::from_toml(&text, path)?;
        flow.validate()?;
        Ok(flow)
    }

    /// Parses a flow from TOML text; `path` names it in messages and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Flow, FlowError> {
        let origin = path.display().to_string();
        let error = |node: Option<&str>, field: Option<&str>, message: String| FlowError {
            origin: origin.clone(),
            node: node.map(str::to_owned),
            field: field.map(str::to_owned),
            message,
        };
        let file: FlowFile = toml::from_str(text)
            .map_err(|parse| error(None, None, parse.to_string().trim_end().to_owned()))?;
        if file.format != FORMAT_VERSION {
            return Err(error(
                None,
                Some("format"),
                format!(
                    "format {} is not supported; this weir reads format {FORMAT_VERSION}",
                    file.format
                ),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("")).to_owned();
        let mut flow = Flow::new(file.name);
        flow.description = file.description;
        flow.version = file.version;
        use weir_core::declared::{MAX_NAME_BYTES, MAX_TAGS};
        if file.tags.len() > MAX_TAGS {
            return Err(error(
                None,
                Some("tags"),
                format!("{} tags, above the maximum of {MAX_TAGS}", file.tags.len()),
            ));
        }
        if let Some(bad) = file
            .tags
            .iter()
            .find(|tag| tag.trim().is_empty() || tag.len() > MAX_NAME_BYTES)
        {
            return Err(error(
                None,
                Some("tags"),
                format!(
                    "the tag `{}` must be 1 to {MAX_NAME_BYTES} bytes of text",
                    bad.chars().take(40).collect::<String>()
                ),
            ));
        }
        flow.tags = file.tags;
        flow.source = Some(path.to_owned());
        flow.retries = file.retries;
        if let Some(delay) = &file.retry_delay {
            flow.retry_delay = parse_duration(delay)
                .map_err(|parse| error(None, Some("retry_delay"), parse.to_string()))?;
        }
        if let Some(timeout) = &file.timeout {
            flow.timeout = Some(
                parse_duration(timeout)
                    .map_err(|parse| error(None, Some("timeout"), parse.to_string()))?,
            );
        }
        for (name, parameter) in file.parameters {
            let kind = ParameterType::parse(&parameter.kind).ok_or_else(|| {
                error(
                    None,
                    Some(&format!("parameters.{name}.type")),
                    format!(
                        "unknown type `{}`; expected string, integer, number, boolean, array, object or any",
                        parameter.kind
                    ),
                )
            })?;
            flow.parameters.insert(
                name,
                Parameter {
                    kind,
                    default: parameter.default,
                    description: parameter.description,
                    schema: parameter.schema,
                },
            );
        }
        for (alias, plugin) in file.plugins {
            flow.plugins.insert(alias, base.join(plugin));
        }
        flow.output = file.output.map(|output| match output {
            OutputFile::Node(node) => FlowOutput::Node(node),
            OutputFile::Named(named) => FlowOutput::Named(named),
        });
        for (id, table) in file.nodes {
            let node_file: NodeFile = table.try_into().map_err(|parse: toml::de::Error| {
                error(Some(&id), None, parse.to_string().trim_end().to_owned())
            })?;
            flow.nodes.push(
                convert_node(&id, node_file, &base)
                    .map_err(|(field, message)| error(Some(&id), Some(field), message))?,
            );
        }
        Ok(flow)
    }
}

fn convert_node(id: &str, file: NodeFile, base: &Path) -> Result<Node, (&'static str, String)> {
    let kind = match (file.task, file.flow) {
        (Some(_), Some(_)) => {
            return Err((
                "flow",
                "a node runs either a `task` or a `flow`, not both".into(),
            ));
        }
        (None, None) => {
            return Err((
                "task",
                "a node needs a `task` (\"plugin.task\") or a `flow` (a flow file)".into(),
            ));
        }
        (None, Some(path)) => {
            if file.input.is_some() {
                return Err((
                    "input",
                    "a subflow node takes `parameters`, not `input`".into(),
                ));
            }
            NodeKind::Subflow {
                path: base.join(path),
                parameters: file
                    .parameters
                    .unwrap_or_else(|| Value::Object(Default::default())),
            }
        }
        (Some(task), None) => {
            if file.parameters.is_some() {
                return Err((
                    "parameters",
                    "a task node takes `input`, not `parameters`".into(),
                ));
            }
            let (plugin, task) = task
                .split_once('.')
                .ok_or(("task", format!("`{task}` should be `plugin.task`")))?;
            let duration = |field: &'static str, value: &Option<DurationFile>| {
                value
                    .as_ref()
                    .map(|value| value.to_duration().map_err(|message| (field, message)))
                    .transpose()
            };
            let retry_delays = match (&file.retry_delay, &file.retry_backoff) {
                (Some(_), Some(_)) => {
                    return Err((
                        "retry_backoff",
                        "give `retry_delay` or `retry_backoff`, not both".into(),
                    ));
                }
                (Some(DelayFile::One(delay)), None) => Some(RetryDelays::PerRetry(vec![
                    delay
                        .to_duration()
                        .map_err(|message| ("retry_delay", message))?,
                ])),
                (Some(DelayFile::PerRetry(delays)), None) => Some(RetryDelays::PerRetry(
                    delays
                        .iter()
                        .map(|delay| {
                            delay
                                .to_duration()
                                .map_err(|message| ("retry_delay", message))
                        })
                        .collect::<Result<_, _>>()?,
                )),
                (None, Some(base)) => Some(RetryDelays::Exponential {
                    base: base
                        .to_duration()
                        .map_err(|message| ("retry_backoff", message))?,
                    max: duration("retry_backoff_max", &file.retry_backoff_max)?,
                }),
                (None, None) => None,
            };
            let maximum = weir_core::declared::MAX_JITTER_FACTOR;
            if let Some(jitter) = file.retry_jitter
                && !(0.0..=maximum).contains(&jitter)
            {
                return Err((
                    "retry_jitter",
                    format!("{jitter} is not a number from 0 to {maximum}"),
                ));
            }
            let maximum = weir_core::declared::MAX_RETRIES;
            if let Some(retries) = file.retries
                && retries > maximum
            {
                return Err((
                    "retries",
                    format!("{retries} is above the maximum of {maximum}"),
                ));
            }
            let cache_policy = match file.cache.as_deref() {
                None => None,
                Some("none") => Some(CachePolicy::None),
                Some("inputs") => Some(CachePolicy::Inputs),
                Some(other) => {
                    return Err((
                        "cache",
                        format!("unknown cache policy `{other}`; expected \"none\" or \"inputs\""),
                    ));
                }
            };
            NodeKind::Task {
                plugin: plugin.to_owned(),
                task: task.to_owned(),
                input: file
                    .input
                    .unwrap_or_else(|| Value::Object(Default::default())),
                map: file.map,
                overrides: Box::new(TaskOverrides {
                    retries: file.retries,
                    retry_delays,
                    retry_jitter_factor: file.retry_jitter,
                    timeout: duration("timeout", &file.timeout)?,
                    memory_bytes: file
                        .memory
                        .as_deref()
                        .map(parse_size)
                        .transpose()
                        .map_err(|message| ("memory", message))?,
                    fuel: file.fuel,
                    cache_policy,
                    cache_expiration: duration("cache_expiration", &file.cache_expiration)?,
                    refresh_cache: file.refresh_cache,
                    extra_tags: file.tags,
                    run_name: file.run_name,
                    log_prints: file.log_prints,
                    grants: Grants {
                        dirs: file
                            .dirs
                            .iter()
                            .map(|spec| {
                                DirGrant::parse(spec).map(|mut grant| {
                                    grant.host = base.join(&grant.host);
                                    grant
                                })
                            })
                            .collect::<Result<_, _>>()
                            .map_err(|message| ("dirs", message))?,
                        env: file.env,
                        http: file
                            .http
                            .iter()
                            .filter(|spec| !spec.contains("${"))
                            .map(|spec| HttpGrant::parse(spec))
                            .collect::<Result<_, _>>()
                            .map_err(|message| ("http", message))?,
                    },
                }),
                http_templates: file
                    .http
                    .iter()
                    .filter(|spec| spec.contains("${"))
                    .cloned()
                    .collect(),
            }
        }
    };
    Ok(Node {
        id: id.to_owned(),
        kind,
        wait_for: file.wait_for,
        allow_failure: file.allow_failure,
    })
}
