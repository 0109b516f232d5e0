//! JavaScript plugins: an ES module of `task(...)` calls, made a component by componentize-js.

use std::path::Path;

use crate::{BuildError, BuildOptions, Language, Project};

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
    _project: &Project,
    _options: &BuildOptions,
    _output: &Path,
) -> Result<(), BuildError> {
    todo!("componentize-js")
}
