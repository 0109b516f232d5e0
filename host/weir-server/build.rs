//! Builds the web UI (`ui/` at the workspace's root) with npm into `OUT_DIR`, and
//! writes the list of its assets for `include_bytes!`, so that the binary serves them
//! with no network and no files beside it. `WEIR_UI_DIST=DIR` uses assets built
//! elsewhere instead; without the `ui` feature the server ships a page that says so.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: &[&str] = &[
    "package.json",
    "package-lock.json",
    "build.mjs",
    "index.html",
];

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_UI_DIST");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let assets = if std::env::var_os("CARGO_FEATURE_UI").is_none() {
        Vec::new()
    } else if let Some(dist) = std::env::var_os("WEIR_UI_DIST") {
        let dist = PathBuf::from(dist);
        println!("cargo:rerun-if-changed={}", dist.display());
        list(&dist)
    } else {
        build(&out)
    };
    let mut table = String::from("pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n");
    for path in &assets {
        let name = path.file_name().unwrap().to_string_lossy();
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("ui_assets.rs"), table).expect("OUT_DIR is writable");
}

fn list(dist: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dist)
        .unwrap_or_else(|error| panic!("reading the UI's assets in {}: {error}", dist.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.iter().any(|path| path.ends_with("index.html")),
        "{} holds no index.html: is it a built UI?",
        dist.display()
    );
    files
}

fn build(out: &Path) -> Vec<PathBuf> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../../ui");
    for file in SOURCES {
        println!("cargo:rerun-if-changed={}", ui.join(file).display());
    }
    println!("cargo:rerun-if-changed={}", ui.join("src").display());
    // Built in a copy, so that nothing is written into the source tree.
    let work = out.join("ui-build");
    std::fs::create_dir_all(work.join("src")).unwrap();
    for file in SOURCES {
        std::fs::copy(ui.join(file), work.join(file))
            .unwrap_or_else(|error| panic!("copying ui/{file}: {error}"));
    }
    for entry in std::fs::read_dir(ui.join("src")).unwrap().flatten() {
        std::fs::copy(entry.path(), work.join("src").join(entry.file_name())).unwrap();
    }
    // The dependencies are installed again only when the lock file changed.
    let lock = std::fs::read(ui.join("package-lock.json")).unwrap();
    let stamp = work.join("node_modules/.weir-lock");
    if std::fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                // As weir-build installs its npm tools: the cache first, and a stalled
                // request given up (and retried) after a minute rather than hanging.
                .args([
                    "--prefer-offline",
                    "--fetch-timeout=60000",
                    "--fetch-retries=4",
                ])
                .current_dir(&work),
            "installing the UI's dependencies (`npm ci`)",
        );
        std::fs::write(&stamp, &lock).unwrap();
    }
    let dist = out.join("ui-dist");
    let _ = std::fs::remove_dir_all(&dist);
    run(
        Command::new("node")
            .arg("build.mjs")
            .arg(&dist)
            .current_dir(&work),
        "building the UI (`node build.mjs`)",
    );
    list(&dist)
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{what} failed ({status})"),
        Err(error) => panic!(
            "{what}: {error}. weir-server builds its web UI with Node.js 18 or newer and npm \
             (scripts/install-deps installs them); or set WEIR_UI_DIST to a built UI, or build \
             without the `ui` feature"
        ),
    }
}
