//! Helpers shared by weir's integration tests and benchmarks: where the test plugins
//! were built, one runtime per process, and a runner over a fresh store in a
//! temporary directory.

pub mod bare;
pub mod browser;
pub mod postgres;
pub mod server;
pub mod shapes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use weir_core::{Clock, LogLevel, State, SystemClock};
use weir_runner::{FlowRunLabel, FlowRunner, RunLabel, RunObserver, TaskRunner};
use weir_runtime::{Plugin, Runtime, RuntimeConfig};
use weir_store::Store;
use weir_store_sqlite::SqliteStore;

/// The `.wasm` file of a test plugin built by `build.rs` from `plugins/NAME` (Rust),
/// `plugins/python/NAME` or `plugins/js/NAME`.
pub fn plugin_path(name: &str) -> PathBuf {
    let polyglot = PathBuf::from(env!("WEIR_TEST_POLYGLOT_PLUGINS")).join(format!("{name}.wasm"));
    if polyglot.is_file() {
        return polyglot;
    }
    PathBuf::from(env!("WEIR_TEST_PLUGINS")).join(format!("{name}.wasm"))
}

/// Where the build installed componentize-py and componentize-js, for tests of `weir build`.
pub fn tools_dir() -> PathBuf {
    PathBuf::from(env!("WEIR_TEST_TOOLS_DIR"))
}

/// One runtime (one engine, one epoch ticker) for the whole test process, with a
/// compiled-plugin cache so each plugin is compiled once.
pub fn shared_runtime() -> Arc<Runtime> {
    shared_runtime_cell().clone()
}

/// A runtime of its own with `config` changed from the shared one's, sharing its
/// compiled-plugin cache.
pub fn runtime_with(configure: impl FnOnce(&mut RuntimeConfig)) -> Arc<Runtime> {
    let mut config = RuntimeConfig {
        compiled_cache_dir: Some(PathBuf::from(env!("OUT_DIR")).join("compiled")),
        pool_instances: 16,
        ..Default::default()
    };
    configure(&mut config);
    Arc::new(Runtime::new(config).expect("the runtime starts"))
}

fn shared_runtime_cell() -> &'static Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Inside the build directory: reused by later test runs, removed by `cargo clean`.
        let cache = PathBuf::from(env!("OUT_DIR")).join("compiled");
        Arc::new(
            Runtime::new(RuntimeConfig {
                compiled_cache_dir: Some(cache),
                ..Default::default()
            })
            .expect("the test runtime starts"),
        )
    })
}

/// Loads (once per process) a test plugin into the shared runtime. Tests that ask at the same
/// time wait for one load: compiling a Python or JavaScript component takes seconds of CPU.
pub async fn load_plugin(name: &str) -> Plugin {
    type Cells = Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Plugin>>>>;
    static LOADED: OnceLock<Cells> = OnceLock::new();
    let cell = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .clone();
    cell.get_or_init(|| async {
        shared_runtime()
            .load_plugin_file(&plugin_path(name))
            .await
            .unwrap_or_else(|error| panic!("loading test plugin {name}: {error}"))
    })
    .await
    .clone()
}

/// A small HTTP/1.1 server on 127.0.0.1 for tests: `respond(path)` gives the status and
/// body of each request (each on its own thread, so a slow answer blocks no other). It
/// serves at most 100 connections within 30 s, then stops. Returns `127.0.0.1:PORT`.
pub fn http_server(respond: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> String {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let address = listener.local_addr().expect("a bound address").to_string();
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < 100 && Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            let respond = respond.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = respond(path);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    address
}

/// Everything an observer saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Created {
        name: String,
        task: String,
    },
    Log {
        name: String,
        level: LogLevel,
        message: String,
    },
    State {
        name: String,
        state: State,
        message: Option<String>,
    },
    FlowCreated {
        name: String,
        flow: String,
    },
    FlowState {
        name: String,
        state: State,
        message: Option<String>,
    },
}

/// An observer that remembers what it saw, for assertions.
#[derive(Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<Event>>,
}

impl RecordingObserver {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn log_messages(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Log { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }
}

impl RunObserver for RecordingObserver {
    fn flow_run_created(&self, run: &FlowRunLabel) {
        self.events.lock().unwrap().push(Event::FlowCreated {
            name: run.name.clone(),
            flow: run.flow.clone(),
        });
    }

    fn flow_run_state(&self, run: &FlowRunLabel, state: State, message: Option<&str>) {
        self.events.lock().unwrap().push(Event::FlowState {
            name: run.name.clone(),
            state,
            message: message.map(str::to_owned),
        });
    }

    fn task_run_created(&self, run: &RunLabel) {
        self.events.lock().unwrap().push(Event::Created {
            name: run.name.clone(),
            task: run.task.clone(),
        });
    }

    fn task_run_log(&self, run: &RunLabel, level: LogLevel, message: &str) {
        self.events.lock().unwrap().push(Event::Log {
            name: run.name.clone(),
            level,
            message: message.to_owned(),
        });
    }

    fn task_run_state(&self, run: &RunLabel, state: State, message: Option<&str>) {
        self.events.lock().unwrap().push(Event::State {
            name: run.name.clone(),
            state,
            message: message.map(str::to_owned),
        });
    }
}

/// A runner over a fresh store (SQLite in its own temporary directory, or a new
/// PostgreSQL database) and a temporary directory for files.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    /// What `weir --store` takes to reach the same store.
    pub store_location: String,
    pub observer: Arc<RecordingObserver>,
    pub runner: Arc<TaskRunner>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_runtime_and_clock(shared_runtime(), clock)
    }

    /// A harness over a runtime of its own (other limits than the shared one's).
    pub fn with_runtime(runtime: Arc<Runtime>) -> Self {
        Self::with_runtime_and_clock(runtime, Arc::new(SystemClock))
    }

    fn with_runtime_and_clock(runtime: Arc<Runtime>, clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let location = dir.path().join(".weir");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&location).expect("the store opens"));
        Self::over(dir, store, location.display().to_string(), runtime, clock)
    }

    /// A harness over a new PostgreSQL database (see [`postgres`]).
    pub async fn postgres() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = postgres::fresh_database().await;
        let store: Arc<dyn Store> = Arc::new(
            weir_store_postgres::PostgresStore::connect(&url)
                .await
                .expect("the PostgreSQL store opens"),
        );
        Self::over(dir, store, url, shared_runtime(), Arc::new(SystemClock))
    }

    /// A harness on either backend: what a test run on both takes.
    pub async fn on(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::new(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    fn over(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        store_location: String,
        runtime: Arc<Runtime>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let observer = Arc::new(RecordingObserver::default());
        let runner = Arc::new(TaskRunner::new(
            runtime,
            store.clone(),
            clock,
            observer.clone(),
        ));
        Harness {
            dir,
            store,
            store_location,
            observer,
            runner,
        }
    }
}

impl Harness {
    /// A flow runner over this harness's task runner.
    pub fn flows(&self, concurrency: usize) -> Arc<FlowRunner> {
        Arc::new(FlowRunner::new(self.runner.clone(), concurrency))
    }

    /// Writes a flow file into the harness's directory; `{arith}`, `{hello}`, `{flaky}`
    /// and `{misbehave}` stand for the test plugins' paths.
    pub fn write_flow(&self, file: &str, body: &str) -> PathBuf {
        let mut text = body.to_owned();
        for plugin in ["arith", "hello", "flaky", "misbehave", "fetcher"] {
            text = text.replace(
                &format!("{{{plugin}}}"),
                &plugin_path(plugin).display().to_string(),
            );
        }
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("the flow file is written");
        path
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The store backends every store-level test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
}
