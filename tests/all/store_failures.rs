//! The store under stress: a disk that fills up mid-run, a damaged or truncated database
//! file, a store written by a newer weir. Each is a clear error naming the store and the
//! cause, never a panic, and nothing recorded earlier is lost.

use std::path::PathBuf;
use std::process::Command;
use weir_core::State;
use weir_store::History as _;
use weir_store_sqlite::SqliteStore;

use crate::command::{text, weir};

/// A tmpfs mounted for the test's lifetime (the test suite runs as root, as CI does).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs the suite as root)"
        );
        SmallDisk { path }
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

const FLOW: &str = r#"
format = 1
name = "filler"
output = "blobs"

[plugins]
hostile = "HOSTILE"

[nodes.blobs]
task = "hostile.big-output"
input = { mib = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] }
map = ["mib"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_run_clearly_and_it_resumes_once_there_is_space() {
    let dir = tempfile::tempdir().unwrap();
    let flow = FLOW.replace(
        "HOSTILE",
        &weir_tests::plugin_path("hostile").display().to_string(),
    );
    std::fs::write(dir.path().join("filler.toml"), flow).unwrap();
    let disk = SmallDisk::mount(dir.path().join(".weir"), "6m");
    // A first run that fits: it must survive what follows.
    let hostile = weir_tests::plugin_path("hostile").display().to_string();
    let small = weir(
        dir.path(),
        &["task", "run", &hostile, "--task", "fine", "--input", "{}"],
    );
    assert_eq!(small.status.code(), Some(0), "{}", text(&small.stderr));

    let full = weir(dir.path(), &["run", "filler.toml"]);
    let stderr = text(&full.stderr);
    assert!(
        matches!(full.status.code(), Some(1 | 5)),
        "{:?}: {stderr}",
        full.status
    );
    assert!(
        stderr.contains("No space left on device") || stderr.contains("database or disk is full"),
        "{stderr}"
    );
    assert!(
        stderr.contains(".weir"),
        "the message names the store: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    disk.grow("64m");
    let store = SqliteStore::open(&dir.path().join(".weir")).unwrap();
    let earlier = store
        .task_runs(&weir_store::TaskRunFilter {
            task: Some("fine".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(earlier.len(), 1);
    assert_eq!(earlier[0].state, State::Completed);
    let run = store
        .flow_runs(&weir_store::FlowRunFilter::default())
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("the flow run was recorded before the disk filled");
    drop(store);
    let resumed = weir(dir.path(), &["run", "--resume", run.id.as_str()]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let output: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(output.as_array().unwrap().len(), 16);
    drop(disk);
}

#[test]
fn a_damaged_truncated_or_newer_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join(".weir");
    let hostile = weir_tests::plugin_path("hostile").display().to_string();
    let ran = weir(
        dir.path(),
        &["task", "run", &hostile, "--task", "fine", "--input", "{}"],
    );
    assert_eq!(ran.status.code(), Some(0));
    let database = store_dir.join("weir.db");
    let intact = std::fs::read(&database).unwrap();

    // Not a database at all.
    std::fs::write(&database, vec![0x5a; 64 << 10]).unwrap();
    let _ = std::fs::remove_file(store_dir.join("weir.db-wal"));
    let _ = std::fs::remove_file(store_dir.join("weir.db-shm"));
    let garbage = weir(dir.path(), &["runs", "ls"]);
    let stderr = text(&garbage.stderr);
    assert_eq!(garbage.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("weir.db") && stderr.contains("is not a weir store (or it is damaged)"),
        "{stderr}"
    );

    // Cut in half.
    std::fs::write(&database, &intact[..intact.len() / 2]).unwrap();
    let truncated = weir(dir.path(), &["runs", "ls", "--tasks"]);
    let stderr = text(&truncated.stderr);
    assert!(
        matches!(truncated.status.code(), Some(0 | 5)),
        "{:?} {stderr}",
        truncated.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    if truncated.status.code() == Some(5) {
        assert!(
            stderr.contains("weir.db") || stderr.contains("store"),
            "{stderr}"
        );
    }

    // Written by a newer weir.
    std::fs::write(&database, &intact).unwrap();
    {
        let connection = rusqlite::Connection::open(&database).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
    }
    let newer = weir(dir.path(), &["runs", "ls"]);
    let stderr = text(&newer.stderr);
    assert_eq!(newer.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("was written by a newer weir (schema version 99; this weir knows versions up to 9): upgrade weir, or use another --store"),
        "{stderr}"
    );
}
