//! Tasks that misbehave, to test that the host contains them: endless loops, unbounded memory,
//! panics, stack overflow, endless output, blocking calls and attempts to reach outside the
//! sandbox.

use std::hint::black_box;
use std::time::Duration;

use serde_json::{Map, Value};

/// Loops forever without calling the host.
#[weir::task]
fn spin() -> u64 {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates memory without bound, 1 MiB at a time, writing to every page.
#[weir::task]
fn hog() -> usize {
    hoard()
}

/// `hog` for each element of a map (the element itself is ignored).
#[weir::task]
fn hog_each(element: u64) -> usize {
    black_box(element);
    hoard()
}

fn hoard() -> usize {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xA5; 1 << 20]);
        black_box(&hoard);
    }
}

/// Panics with `message`.
#[weir::task]
fn boom(message: String) -> String {
    panic!("{message}");
}

/// Recurses until the stack overflows.
#[weir::task]
fn overflow() -> u64 {
    recurse(0)
}

/// `black_box` hides that it never ends, and using `frame` after the call keeps it from being a
/// tail call (or a loop): every level takes stack.
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    let deeper = if black_box(true) {
        recurse(depth + 1)
    } else {
        0
    };
    black_box(&frame);
    deeper.wrapping_add(1)
}

/// Prints lines to stdout and stderr without end.
#[weir::task]
fn flood() -> u64 {
    let mut n: u64 = 0;
    loop {
        println!("flood line {n} on stdout");
        eprintln!("flood line {n} on stderr");
        n += 1;
    }
}

/// Prints `lines` numbered lines to stdout and returns how many it printed.
#[weir::task]
fn chatty(lines: u32) -> u32 {
    for n in 1..=lines {
        println!("line {n}");
    }
    lines
}

/// Sleeps `ms` milliseconds: a blocking host call.
#[weir::task]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Tries to reach outside the sandbox: files, the environment, stdin and the network (a TCP connection to
/// `port` on 127.0.0.1). Returns one entry per attempt, `"ok: ..."` or `"denied: <error>"`; it
/// never panics.
#[weir::task]
fn escape(port: u16) -> Value {
    let mut attempts = Map::new();
    let mut record = |what: &str, result: Result<String, String>| {
        let outcome = match result {
            Ok(detail) => format!("ok: {detail}"),
            Err(error) => format!("denied: {error}"),
        };
        attempts.insert(what.to_owned(), Value::String(outcome));
    };
    record(
        "read_etc_passwd",
        std::fs::read_to_string("/etc/passwd")
            .map(|text| format!("{} bytes", text.len()))
            .map_err(|error| error.to_string()),
    );
    record("list_dot", list(".").map_err(|error| error.to_string()));
    record(
        "open_root",
        std::fs::File::open("/")
            .map(|_| "opened".to_owned())
            .map_err(|error| error.to_string()),
    );
    for name in ["HOME", "PATH"] {
        record(
            &format!("env_{}", name.to_lowercase()),
            std::env::var(name).map_err(|error| error.to_string()),
        );
    }
    // `vars_os`: `vars` panics on a variable that is not UTF-8.
    record("env_count", Ok(std::env::vars_os().count().to_string()));
    // The host's stdin is not inherited: reading it gives nothing.
    let mut stdin = Vec::new();
    record(
        "stdin_bytes",
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin)
            .map(|count| count.to_string())
            .map_err(|error| error.to_string()),
    );
    record(
        "tcp_connect",
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(|stream| match stream.peer_addr() {
                Ok(peer) => format!("connected to {peer}"),
                Err(_) => "connected".to_owned(),
            })
            .map_err(|error| error.to_string()),
    );
    Value::Object(attempts)
}

/// Reads each file in `read` and writes a line to each file in `write`, reporting
/// `"ok: ..."` or `"denied: <error>"` per path (for testing directory grants).
#[weir::task]
fn files(read: Vec<String>, write: Vec<String>) -> Value {
    let mut report = Map::new();
    for path in read {
        let outcome = match std::fs::read_to_string(&path) {
            Ok(text) => format!("ok: {}", text.trim()),
            Err(error) => format!("denied: {error}"),
        };
        report.insert(format!("read {path}"), Value::String(outcome));
    }
    for path in write {
        let outcome = match std::fs::write(&path, "written by a weir task\n") {
            Ok(()) => "ok: written".to_owned(),
            Err(error) => format!("denied: {error}"),
        };
        report.insert(format!("write {path}"), Value::String(outcome));
    }
    Value::Object(report)
}

/// Reads each named environment variable and logs what it found (for testing
/// environment grants and the redaction of secrets).
#[weir::task]
fn env(names: Vec<String>) -> Value {
    let mut report = Map::new();
    for name in names {
        let outcome = match std::env::var(&name) {
            Ok(value) => {
                weir::info!("{name} is {value}");
                format!("ok: {value}")
            }
            Err(error) => format!("denied: {error}"),
        };
        report.insert(name, Value::String(outcome));
    }
    Value::Object(report)
}

/// The names in directory `path`.
fn list(path: &str) -> std::io::Result<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(format!("{} entries: {}", names.len(), names.join(", ")))
}

weir::export!(
    spin, hog, hog_each, boom, overflow, flood, chatty, sleepy, escape, files, env
);
