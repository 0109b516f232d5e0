//! The flows a server can run: the `*.toml` files of its flow directories, read anew
//! at each request (a file added or edited shows at once). A file that does not load
//! is listed with its error; two files of one flow name are an error on the second.
//! Names from a request are looked up among the files found, never joined to a path.

use serde::Serialize;
use std::path::PathBuf;
use utoipa::ToSchema;
use weir_flow::Flow;

/// A flow file of the catalog.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogEntry {
    /// The flow's name (`name = …` in the file), or the file's stem when it does not load.
    pub name: String,
    /// The file, as found under a flow directory.
    pub file: String,
    pub description: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub parameters: Vec<ParameterInfo>,
    /// How many nodes the flow has.
    pub nodes: usize,
    /// Why the file cannot be run, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub(crate) flow: Option<Flow>,
}

/// A parameter of a flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParameterInfo {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `array`, `object` or `any`.
    #[serde(rename = "type")]
    pub kind: String,
    /// None: the parameter is required.
    #[schema(value_type = Option<Object>)]
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
}

/// The flow directories of a server.
#[derive(Debug, Clone)]
pub struct FlowCatalog {
    dirs: Vec<PathBuf>,
}

/// The most files a catalog reads, so that a directory of a million files does not stall
/// a request.
const MAX_FILES: usize = 10_000;

impl FlowCatalog {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        FlowCatalog { dirs }
    }

    /// Every flow file, in name order.
    pub fn entries(&self) -> Vec<CatalogEntry> {
        let mut files = Vec::new();
        for dir in &self.dirs {
            let Ok(listing) = fs_err::read_dir(dir) else {
                continue;
            };
            for entry in listing.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                    files.push(path);
                }
                if files.len() >= MAX_FILES {
                    break;
                }
            }
        }
        files.sort();
        let mut entries: Vec<CatalogEntry> = Vec::new();
        for path in files {
            let mut entry = load(&path);
            if entry.error.is_none() && entries.iter().any(|other| other.name == entry.name) {
                entry.error = Some(format!(
                    "another file in the flow directories is also named `{}`",
                    entry.name
                ));
                entry.flow = None;
            }
            entries.push(entry);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name).then(a.file.cmp(&b.file)));
        entries
    }

    /// The runnable flow named `name`.
    pub fn find(&self, name: &str) -> Option<CatalogEntry> {
        self.entries()
            .into_iter()
            .find(|entry| entry.name == name && entry.error.is_none())
    }
}

fn load(path: &std::path::Path) -> CatalogEntry {
    let file = path.display().to_string();
    match Flow::load(path) {
        Ok(flow) => CatalogEntry {
            name: flow.name.clone(),
            file,
            description: flow.description.clone(),
            version: flow.version.clone(),
            tags: flow.tags.clone(),
            parameters: flow
                .parameters
                .iter()
                .map(|(name, parameter)| ParameterInfo {
                    name: name.clone(),
                    kind: parameter.kind.name().to_owned(),
                    default: parameter.default.clone(),
                    description: parameter.description.clone(),
                })
                .collect(),
            nodes: flow.nodes.len(),
            error: None,
            flow: Some(flow),
        },
        Err(error) => CatalogEntry {
            name: path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file,
            description: None,
            version: None,
            tags: Vec::new(),
            parameters: Vec::new(),
            nodes: 0,
            error: Some(error.to_string()),
            flow: None,
        },
    }
}
