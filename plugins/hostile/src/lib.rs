//! A plugin that attacks the host, written against the WIT directly so that nothing
//! stands between it and the contract. What `info()` returns is chosen by a mode string
//! kept in a data segment: the tests copy the component and overwrite the mode
//! (`WEIR-HOSTILE-MODE:normal........` → `WEIR-HOSTILE-MODE:panic.........`), so one
//! build gives every hostile variant. In the `normal` mode its tasks misbehave at run
//! time instead: huge outputs and errors, `exit`, thousands of host resources, a cache
//! key that never returns.

wit_bindgen::generate!({
    path: "../../wit",
    world: "weir:task/plugin",
});

use exports::weir::task::task::Guest;
use std::hint::black_box;
use weir::task::types::{CachePolicy, ExponentialBackoff, TaskError, TaskInfo};

/// Overwritten by the tests: 14 bytes after the tag, padded with dots.
#[used]
static MODE: [u8; 32] = *b"WEIR-HOSTILE-MODE:normal........";

fn mode() -> String {
    // Read through volatile loads so the compiler cannot fold the constant away.
    let bytes: Vec<u8> = (18..MODE.len())
        .map(|index| unsafe { std::ptr::read_volatile(&MODE[index]) })
        .collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('.')
        .to_owned()
}

fn task(name: &str) -> TaskInfo {
    TaskInfo {
        name: name.into(),
        description: None,
        version: None,
        tags: Vec::new(),
        retries: 0,
        retry_delays_ms: Vec::new(),
        retry_backoff: None,
        retry_jitter_factor: None,
        timeout_ms: None,
        cache_policy: CachePolicy::None,
        cache_expiration_ms: None,
        log_prints: true,
        run_name: None,
        input_schema: None,
        output_schema: None,
        needs: Vec::new(),
    }
}

/// The first unsigned integer in the input, e.g. 64 in `{"mib": 64}`.
fn number(input: &str) -> u64 {
    input
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

struct Hostile;

impl Guest for Hostile {
    fn info() -> Vec<TaskInfo> {
        match mode().as_str() {
            "panic" => panic!("info exploded"),
            "alloc" => {
                // More than the address space allows: Rust aborts with its message.
                let huge: Vec<u8> = Vec::with_capacity(black_box(usize::MAX / 2));
                black_box(&huge);
                Vec::new()
            }
            "spin" => loop {
                black_box(0);
            },
            "exit" => std::process::exit(0),
            "jitter-inf" => vec![TaskInfo {
                retries: 3,
                retry_delays_ms: vec![10],
                retry_jitter_factor: Some(f64::INFINITY),
                ..task("jittery")
            }],
            "jitter-nan" => vec![TaskInfo {
                retry_jitter_factor: Some(f64::NAN),
                ..task("jittery")
            }],
            "delay-max" => vec![TaskInfo {
                retries: 1,
                retry_delays_ms: vec![u64::MAX],
                ..task("patient")
            }],
            "backoff-max" => vec![TaskInfo {
                retries: 1,
                retry_backoff: Some(ExponentialBackoff {
                    base_ms: u64::MAX,
                    max_ms: None,
                }),
                ..task("patient")
            }],
            "timeout-max" => vec![TaskInfo {
                timeout_ms: Some(u64::MAX),
                ..task("forever")
            }],
            "retries-max" => vec![TaskInfo {
                retries: u32::MAX,
                ..task("stubborn")
            }],
            "dup" => vec![task("twin"), task("twin")],
            "empty" => vec![task("")],
            "huge-name" => vec![task(&"n".repeat(1 << 20))],
            "many" => (0..100_000).map(|n| task(&format!("task-{n}"))).collect(),
            _ => vec![
                task("fine"),
                task("big-output"),
                task("big-error"),
                task("exit"),
                task("headers"),
                task("alloc"),
                TaskInfo {
                    cache_policy: CachePolicy::CustomKey,
                    ..task("slow-key")
                },
            ],
        }
    }

    fn run(task: String, input: String) -> Result<String, TaskError> {
        let n = number(&input);
        match task.as_str() {
            // `[0,0,…]` of n MiB.
            "big-output" => {
                let mut text = String::with_capacity((n as usize) << 20);
                text.push('[');
                while text.len() < ((n as usize) << 20) - 2 {
                    text.push_str("0,");
                }
                text.push('0');
                text.push(']');
                Ok(text)
            }
            "big-error" => Err(TaskError::Retriable("e".repeat((n as usize) << 20))),
            "exit" => std::process::exit(n as i32),
            // n header sets of 60 KiB each, all kept alive.
            "headers" => {
                let value = vec![b'v'; 60 << 10];
                let mut held = Vec::new();
                for _ in 0..n {
                    let fields = wasi::http::types::Fields::new();
                    let _ = fields.append("x-big", &value);
                    held.push(fields);
                }
                Ok(held.len().to_string())
            }
            // Rust's allocation failure inside the task: "memory allocation of … failed".
            "alloc" => {
                let huge: Vec<u8> = Vec::with_capacity(black_box(usize::MAX / 2));
                black_box(&huge);
                Ok("0".into())
            }
            _ => Ok("1".into()),
        }
    }

    fn cache_key(task: String, _input: String) -> Option<String> {
        if task == "slow-key" {
            loop {
                black_box(0);
            }
        }
        None
    }
}

export!(Hostile);
