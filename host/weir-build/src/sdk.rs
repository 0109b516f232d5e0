//! The guest SDKs and the WIT contract, embedded at compile time (see build.rs).

use std::path::Path;

use crate::{BuildError, Language};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The version of the SDKs this crate carries (weir's own).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Values the SDK manifests inherit from weir's workspace; a copy outside it spells them out.
const WORKSPACE_FIELDS: &[(&str, &str)] = &[
    ("version", SDK_VERSION),
    ("edition", "2024"),
    ("rust-version", "1.95"),
    ("license", "Apache-2.0 WITH LLVM-exception OR MIT"),
];

/// Writes the guest SDK of `language` into `dest`:
/// - Rust: the crates `weir/` (with the WIT in `weir/wit/`) and `weir-macros/`;
/// - Python: the package `weir/`;
/// - JavaScript: the module `weir/index.js`.
pub fn write_sdk(language: Language, dest: &Path) -> Result<(), BuildError> {
    let prefix = match language {
        Language::Rust => "rust/",
        Language::Python => "python/",
        Language::JavaScript => "js/",
    };
    for (name, text) in SDK_FILES {
        let Some(relative) = name.strip_prefix(prefix) else {
            continue;
        };
        let path = dest.join(relative);
        let text = if relative.ends_with("Cargo.toml") {
            standalone_manifest(text)
        } else {
            (*text).to_owned()
        };
        write_file(&path, &text)?;
    }
    if language == Language::Rust {
        write_wit(&dest.join("weir").join("wit"))?;
    }
    Ok(())
}

/// Writes the `weir:task` WIT package into `dest` (a directory).
pub(crate) fn write_wit(dest: &Path) -> Result<(), BuildError> {
    for (name, text) in SDK_FILES {
        if let Some(relative) = name.strip_prefix("wit/") {
            write_file(&dest.join(relative), text)?;
        }
    }
    Ok(())
}

/// Writes `text` unless the file already holds it (keeps timestamps, so builds stay fresh).
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    fs_err::write(path, text)?;
    Ok(())
}

/// An SDK crate's manifest with `field.workspace = true` replaced by the workspace's values.
fn standalone_manifest(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let inherited = WORKSPACE_FIELDS
            .iter()
            .find(|(field, _)| line.trim() == format!("{field}.workspace = true"));
        match inherited {
            Some((field, value)) => out.push_str(&format!("{field} = {value:?}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_and_the_wit_are_embedded() {
        for expected in [
            "wit/weir-task.wit",
            "rust/weir/Cargo.toml",
            "rust/weir/src/lib.rs",
            "rust/weir-macros/src/lib.rs",
            "python/weir/__init__.py",
            "js/weir/index.js",
        ] {
            assert!(
                SDK_FILES.iter().any(|(name, _)| *name == expected),
                "{expected} is not embedded"
            );
        }
    }

    #[test]
    fn manifests_lose_their_workspace_inheritance() {
        for (name, text) in SDK_FILES {
            if name.ends_with("Cargo.toml") {
                let manifest = standalone_manifest(text);
                assert!(!manifest.contains(".workspace"), "{name}: {manifest}");
                assert!(manifest.contains(&format!("version = \"{SDK_VERSION}\"")));
            }
        }
    }
}
