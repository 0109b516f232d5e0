//! `weir serve` processes for the tests and benchmarks: started on a free loopback
//! port, their address read from their first lines, and stopped with the process that
//! started them (a shell between the two kills the server when the test binary's end of
//! a pipe closes, however it ends).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command that runs `program` (its arguments added after) in the background of a
/// shell that waits for its own stdin to close (the test process ended, or the handle
/// was dropped) and then stops it with SIGTERM: a service the tests start dies with
/// them, however they end. Spawn it with a piped stdin.
pub fn watched(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#""$@" & pid=$!; read _ignored; kill -TERM $pid 2>/dev/null; wait $pid"#)
        .arg("watched")
        .arg(program)
        .stdin(Stdio::piped());
    command
}

/// A running `weir serve`.
pub struct ServerProcess {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Its standard error: its lines, the worker's and its runs'.
    pub log: PathBuf,
    watchdog: Child,
}

impl ServerProcess {
    /// Starts `binary --store STORE serve --bind 127.0.0.1:0 ARGS…` in `dir` and waits
    /// until it listens.
    pub fn start(binary: &Path, dir: &Path, store: &str, args: &[&str]) -> Self {
        Self::start_with(binary, dir, store, args, |_| {})
    }

    /// As [`start`](Self::start), with the command adjusted first (environment).
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        store: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        std::fs::create_dir_all(dir).expect("the server's directory can be made");
        let log = dir.join(format!("serve-{}.log", fastrand::u64(..)));
        let stderr = std::fs::File::create(&log).expect("the server's log can be written");
        let mut command = watched(binary);
        command
            .args(["--store", store, "serve"])
            .args(args)
            .current_dir(dir)
            .env_remove("WEIR_STORE")
            .env("WEIR_LOCAL_DIR", dir.join("local"))
            .stdout(Stdio::null())
            .stderr(stderr);
        if !args.contains(&"--bind") {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        adjust(&mut command);
        let watchdog = command.spawn().expect("weir serve starts");
        // Owned from here on: dropping it stops the server, on every path.
        let mut server = ServerProcess {
            url: String::new(),
            log,
            watchdog,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = server.output();
            if let Some(url) = listening_at(&text) {
                server.url = url;
                return server;
            }
            if Instant::now() > deadline || text.contains("error:") {
                drop(server);
                panic!("weir serve did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own process id (the shell's child), for a look at its memory.
    pub fn server_pid(&self) -> Option<u32> {
        let shell = self.watchdog.id();
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// The server's resident memory and its peak, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.server_pid()?)).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(mut self) -> String {
        self.stop_now();
        self.output()
    }

    fn stop_now(&mut self) {
        if let Some(stdin) = self.watchdog.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
        }
        self.watchdog.stdin = None;
        let _ = self.watchdog.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The address in a server's line `… serving the API and the UI of … at http://ADDR/ …`.
fn listening_at(text: &str) -> Option<String> {
    let line = text.lines().find(|line| line.contains("serving the API"))?;
    let start = line.find(" at http://")? + " at ".len();
    let rest = &line[start..];
    let end = rest
        .find('/')
        .and_then(|slash| rest[slash + 2..].find('/').map(|next| slash + 2 + next))?;
    Some(rest[..end].to_owned())
}

/// A small JSON client of the API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Api {
    pub fn new(url: &str) -> Self {
        Api {
            base: format!("{url}/api/v1"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                // Below the 10 s after which the server closes an idle connection: a
                // request sent on a connection as the server closes it is lost.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The status and the JSON body of an answer (`null` when the body is not JSON).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("the body is read");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    /// Waits until the flow run has ended; returns it.
    pub async fn wait_for_end(&self, id: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/flow-runs/{id}")).await;
            assert_eq!(status, 200, "{body}");
            let state = body["flow_run"]["state"].as_str().unwrap_or_default();
            if [
                "Completed",
                "Failed",
                "Crashed",
                "Cancelled",
                "TimedOut",
                "NotReady",
            ]
            .contains(&state)
            {
                return body;
            }
            assert!(Instant::now() < deadline, "flow run {id} is still {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
