//! JavaScript plugins: an ES module of `task(...)` calls, bundled with rolldown and made a
//! component by componentize-js.

use std::path::Path;
use std::process::Command;

use crate::sdk::{write_file, write_wit};
use crate::{BuildError, BuildOptions, Language, Project, run_step, tools, write_sdk};

/// The build script run with node; see its header.
const COMPONENTIZE_SCRIPT: &str = include_str!("componentize.mjs");

#[derive(serde::Deserialize)]
struct PackageJson {
    name: Option<String>,
    main: Option<String>,
}

pub(crate) fn open(dir: &Path) -> Result<Project, BuildError> {
    let path = dir.join("package.json");
    let text = fs_err::read_to_string(&path)?;
    let manifest: PackageJson = serde_json::from_str(&text)
        .map_err(|error| BuildError::Project(format!("{}: {error}", path.display())))?;
    let name = manifest
        .name
        .ok_or_else(|| BuildError::Project(format!("{} has no `name`", path.display())))?;
    // A scoped package's plugin is named without its scope.
    let name = name.rsplit('/').next().unwrap_or(&name).to_owned();
    let main = manifest.main.unwrap_or_else(|| "tasks.js".to_owned());
    if !dir.join(&main).is_file() {
        return Err(BuildError::Project(format!(
            "{}: the task module `{main}` does not exist",
            path.display()
        )));
    }
    Ok(Project {
        dir: dir.to_owned(),
        language: Language::JavaScript,
        name,
        entry: main,
    })
}

pub(crate) fn build(
    project: &Project,
    options: &BuildOptions,
    output: &Path,
) -> Result<(), BuildError> {
    let (prefix, node) = tools::componentize_js(&options.tools_dir(project), options)?;
    let work = options.work_dir(project);
    let wit = work.join("wit");
    write_wit(&wit)?;
    // The project's own copy of the SDK (what `weir new` writes and its tests import) when it
    // has one, else the one this weir carries. Tasks importing another copy still register
    // with the entry's: the SDK keeps its registry on globalThis.
    let vendored = project.dir.join("weir").join("index.js");
    let sdk = if vendored.is_file() {
        vendored
    } else {
        let carried = work.join("sdk").join("js");
        write_sdk(Language::JavaScript, &carried)?;
        carried.join("weir").join("index.js")
    };
    let script = work.join("componentize.mjs");
    write_file(&script, COMPONENTIZE_SCRIPT)?;
    options.say(&format!(
        "componentize-js: {} -> {}",
        project.entry,
        output.display()
    ));
    run_step(
        "componentize-js",
        Command::new(node)
            .current_dir(&project.dir)
            .arg(&script)
            .arg("--tasks")
            .arg(project.dir.join(&project.entry))
            .arg("--sdk")
            .arg(&sdk)
            .arg("--wit")
            .arg(&wit)
            .arg("--work")
            .arg(work.join("js"))
            .arg("--node-modules")
            .arg(prefix.join("node_modules"))
            .arg("--out")
            .arg(output),
    )?;
    Ok(())
}
