//! A real headless Chromium for the UI's tests, driven over WebDriver: one chromedriver
//! for the whole test run (started on first use, stopped with the test process), and a
//! browser session per test. Sessions take turns: two Chromiums on a two-core machine
//! would time each other out.

use fantoccini::{Client, ClientBuilder, Locator};
use std::io::Write as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Driver {
    url: String,
    _watchdog: Child,
}

// Never dropped: the shell stops chromedriver when this process's end of its stdin
// closes, at exit.
static DRIVER: std::sync::OnceLock<Driver> = std::sync::OnceLock::new();
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver() -> &'static Driver {
    DRIVER.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let watchdog = crate::server::watched("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (scripts/install-deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            url: format!("http://127.0.0.1:{port}"),
            _watchdog: watchdog,
        }
    })
}

/// A browser session; the next test's waits until this one is dropped. Dropped without
/// `close` (a test that failed), it ends its session over plain HTTP, so that no
/// Chromium outlives the test.
pub struct Browser {
    pub client: Client,
    /// chromedriver's `host:port` and the session's id, for the drop.
    session: Option<(String, String)>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let Some((address, id)) = self.session.take() else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{id} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
            }
        }
    }
}

impl Browser {
    pub async fn open() -> Self {
        let turn = TURN.lock().await;
        let driver = driver();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                // --no-sandbox: the tests run as root in CI, where Chromium's own sandbox
                // cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1000"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .map(|id| (driver.url.trim_start_matches("http://").to_owned(), id));
        Browser {
            client,
            session,
            _turn: turn,
        }
    }

    /// Waits (up to `within`) for an element matching `css`.
    pub async fn wait_for(&self, css: &str, within: Duration) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(within)
            .every(Duration::from_millis(25))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no `{css}` within {within:?}: {error}"))
    }

    /// Waits for an element matching `css`, then clicks it.
    pub async fn click(&self, css: &str) {
        self.wait_for(css, Duration::from_secs(30))
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("clicking `{css}`: {error}"));
    }

    /// Waits for an element matching `css`; returns its attribute `name`.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.wait_for(css, Duration::from_secs(30))
            .await
            .attr(name)
            .await
            .unwrap_or_else(|error| panic!("reading `{name}` of `{css}`: {error}"))
    }

    /// Runs JavaScript in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("running `{script}`: {error}"))
    }

    /// Writes a screenshot of the page to `target/ui-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = std::fs::File::create(dir.join(format!("{name}.png"))).unwrap();
        file.write_all(&png).unwrap();
    }

    pub async fn close(mut self) {
        if self.client.clone().close().await.is_ok() {
            self.session = None;
        }
    }
}
