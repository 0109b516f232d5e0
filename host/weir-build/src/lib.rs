//! Builds weir task plugins into WebAssembly components, whatever their language, and starts new
//! plugin projects.
//!
//! A plugin project is a directory with one of:
//! - `Cargo.toml`: a Rust `cdylib` using the `weir` crate, built with `cargo build --release
//!   --target wasm32-wasip2`;
//! - `pyproject.toml`: a Python module of `@task` functions (`[tool.weir] module`, default
//!   `tasks`), built with componentize-py;
//! - `package.json`: a JavaScript module of `task(...)` calls (`main`, default `tasks.js`),
//!   built with componentize-js.
//!
//! The componentizers come from PyPI and npm at pinned versions and are installed on first use
//! into a tools directory ([`BuildOptions::tools_dir`], default `.weir-build/tools` in the
//! project). The component is written to `dist/<name>.wasm`. Checking it against the
//! `weir:task` world needs a WebAssembly runtime and is left to the caller (`weir build` loads it
//! into weir's own).

mod js;
mod new;
mod python;
mod rust;
mod sdk;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use new::new_project;
pub use sdk::{SDK_VERSION, write_sdk};
pub use tools::{COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION, ROLLDOWN_VERSION};

/// The languages a plugin can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    /// Parses `rust`, `python` (`py`) or `js` (`javascript`).
    pub fn parse(text: &str) -> Option<Language> {
        match text.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Some(Language::Rust),
            "python" | "py" => Some(Language::Python),
            "js" | "javascript" => Some(Language::JavaScript),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }
}

/// Why a build (or a new project) failed. The messages are written for the person at the
/// terminal: what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory holds no plugin project, or its manifest is wrong.
    #[error("{0}")]
    Project(String),
    /// A program the build needs is not installed.
    #[error("{tool} was not found: {hint}")]
    ToolMissing { tool: String, hint: String },
    /// A step (installing a componentizer, compiling) ran and failed.
    #[error("{step} failed{}", if .output.is_empty() { String::new() } else { format!(":\n{}", .output) })]
    Step { step: String, output: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A plugin project found on disk.
#[derive(Clone, Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub language: Language,
    /// The plugin's name: the component is `dist/<name>.wasm`.
    pub name: String,
    /// Python: the task module; JavaScript: the task module's file; Rust: unused.
    pub entry: String,
}

impl Project {
    /// Reads the project in `dir`, telling its language from its manifest.
    pub fn open(dir: &Path) -> Result<Project, BuildError> {
        if !dir.is_dir() {
            return Err(BuildError::Project(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        // Absolute, because the build runs tools in other directories.
        let dir = &fs_err::canonicalize(dir)?;
        if dir.join("Cargo.toml").is_file() {
            rust::open(dir)
        } else if dir.join("pyproject.toml").is_file() {
            python::open(dir)
        } else if dir.join("package.json").is_file() {
            js::open(dir)
        } else {
            Err(BuildError::Project(format!(
                "{} is not a plugin project: it has no Cargo.toml, pyproject.toml or package.json \
                 (start one with `weir new --lang rust|python|js NAME`)",
                dir.display()
            )))
        }
    }

    /// Where the build keeps what it generates (entry modules, the WIT, the default tools).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join(".weir-build")
    }

    /// Where the component is written.
    pub fn output(&self) -> PathBuf {
        self.dir.join("dist").join(format!("{}.wasm", self.name))
    }
}

/// How to build.
#[derive(Default)]
pub struct BuildOptions<'a> {
    /// Where componentizers are installed; default `.weir-build/tools` in the project.
    pub tools_dir: Option<PathBuf>,
    /// Where the build writes what it generates; default `.weir-build` in the project.
    pub work_dir: Option<PathBuf>,
    /// The component to write; default `dist/<name>.wasm` in the project.
    pub output: Option<PathBuf>,
    /// Told what the build is doing (installing, compiling), a line at a time.
    pub progress: Option<&'a (dyn Fn(&str) + Sync)>,
}

impl BuildOptions<'_> {
    fn say(&self, line: &str) {
        if let Some(progress) = self.progress {
            progress(line);
        }
    }

    fn tools_dir(&self, project: &Project) -> PathBuf {
        self.tools_dir
            .clone()
            .unwrap_or_else(|| project.work_dir().join("tools"))
    }

    fn work_dir(&self, project: &Project) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| project.work_dir())
    }
}

/// Builds `project` into a component and returns its path (`dist/<name>.wasm` by default).
pub fn build(project: &Project, options: &BuildOptions) -> Result<PathBuf, BuildError> {
    // Absolute, because the componentizers run in the project's directory.
    let output = std::path::absolute(options.output.clone().unwrap_or_else(|| project.output()))?;
    fs_err::create_dir_all(output.parent().expect("dist/ has a parent"))?;
    match project.language {
        Language::Rust => rust::build(project, options, &output)?,
        Language::Python => python::build(project, options, &output)?,
        Language::JavaScript => js::build(project, options, &output)?,
    }
    Ok(output)
}

/// Runs `command`; on failure the error carries the end of what it printed.
fn run_step(step: &str, command: &mut Command) -> Result<std::process::Output, BuildError> {
    // The componentizers are Rust programs: their backtraces would bury the message.
    command
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    let output = command.output().map_err(|error| BuildError::Step {
        step: step.to_owned(),
        output: error.to_string(),
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        text = format!("{stdout}\n{text}");
    }
    Err(BuildError::Step {
        step: step.to_owned(),
        output: tail(&text, 60),
    })
}

/// The last `lines` lines of `text`: the end of a tool's output is where it says what failed.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Whether `program --version` runs.
fn program_runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}
