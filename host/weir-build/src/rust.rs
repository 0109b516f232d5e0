//! Rust plugins: a `cdylib` crate using the `weir` SDK, built by cargo for wasm32-wasip2.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BuildError, BuildOptions, Language, Project, tail};

const TARGET: &str = "wasm32-wasip2";

#[derive(serde::Deserialize)]
struct Manifest {
    package: Option<Package>,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
}

pub(crate) fn open(dir: &Path) -> Result<Project, BuildError> {
    let path = dir.join("Cargo.toml");
    let text = fs_err::read_to_string(&path)?;
    let manifest: Manifest = toml::from_str(&text)
        .map_err(|error| BuildError::Project(format!("{}: {error}", path.display())))?;
    let package = manifest.package.ok_or_else(|| {
        BuildError::Project(format!(
            "{} has no [package]: build the plugin's own directory, not its workspace",
            path.display()
        ))
    })?;
    Ok(Project {
        dir: dir.to_owned(),
        language: Language::Rust,
        name: package.name,
        entry: String::new(),
    })
}

/// One line of `cargo build --message-format=json`, the part that names built files.
#[derive(serde::Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

pub(crate) fn build(
    project: &Project,
    options: &BuildOptions,
    output: &Path,
) -> Result<(), BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = project.dir.join("Cargo.toml");
    options.say(&format!(
        "cargo build --release --target {TARGET}: {}",
        project.name
    ));
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| BuildError::ToolMissing {
            tool: "cargo".into(),
            hint: format!("a Rust plugin is built with cargo ({error}); install Rust with rustup"),
        })?;
    let stderr = child.stderr.take().expect("piped");
    // Read stderr on its own thread: cargo blocks when either pipe is full.
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let wanted = fs_err::canonicalize(&manifest)?;
    let mut wasm = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(message) = serde_json::from_str::<Message>(&line?) else {
            continue;
        };
        let ours = message
            .manifest_path
            .as_deref()
            .and_then(|path| std::fs::canonicalize(path).ok())
            .is_some_and(|path| path == wanted);
        if message.reason == "compiler-artifact"
            && ours
            && let Some(file) = message
                .filenames
                .into_iter()
                .find(|file| file.extension().is_some_and(|ext| ext == "wasm"))
        {
            wasm = Some(file);
        }
    }
    let status = child.wait()?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let hint = if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\nhint: the {TARGET} target is missing: run `rustup target add {TARGET}`")
        } else {
            String::new()
        };
        return Err(BuildError::Step {
            step: "cargo build".into(),
            output: format!("{}{hint}", tail(&stderr, 60)),
        });
    }
    let wasm = wasm.ok_or_else(|| {
        BuildError::Project(format!(
            "cargo built no .wasm for {}: is its [lib] crate-type [\"cdylib\"]?",
            project.name
        ))
    })?;
    fs_err::copy(&wasm, output)?;
    Ok(())
}
