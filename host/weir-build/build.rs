//! Embeds the guest SDKs and the WIT contract, so that `weir new` and `weir build` work from
//! any directory with the SDK that matches this weir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/weir-build is two levels below the repository root");
    let sources = [
        ("wit", root.join("wit")),
        ("rust/weir", root.join("guest-sdk/rust/weir")),
        ("rust/weir-macros", root.join("guest-sdk/rust/weir-macros")),
        ("python/weir", root.join("guest-sdk/python/weir")),
        ("js/weir", root.join("guest-sdk/js/weir")),
    ];
    let mut files = Vec::new();
    for (prefix, dir) in &sources {
        println!("cargo:rerun-if-changed={}", dir.display());
        collect(dir, Path::new(prefix), &mut files);
    }
    files.sort();
    let mut code = String::from(
        "/// Every file of the SDKs and the WIT: (path in the SDK tree, text).\npub(crate) static SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &files {
        writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("sdk_files.rs");
    std::fs::write(out, code).expect("writing sdk_files.rs");
}

/// Source files only: not the Rust SDK's own tests, not the `wit` link inside it (the WIT is
/// embedded once), no caches.
fn collect(dir: &Path, prefix: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink()
            || name.starts_with('.')
            || ["tests", "target", "__pycache__", "node_modules"].contains(&name.as_str())
        {
            continue;
        }
        if kind.is_dir() {
            collect(&path, &prefix.join(&name), files);
        } else if [".rs", ".toml", ".wit", ".py", ".js", ".md"]
            .iter()
            .any(|ext| name.ends_with(ext))
        {
            files.push((prefix.join(&name).to_string_lossy().into_owned(), path));
        }
    }
}
