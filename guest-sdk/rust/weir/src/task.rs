//! The trait `#[weir::task]` implements, and the glue `weir::export!` builds from it.

use crate::TaskError;
use crate::bindings::weir::task::types::{CachePolicy, ExponentialBackoff, TaskInfo};

/// One task of a plugin, implemented by `#[weir::task]` on a type named after the function.
///
/// `#[weir::task] fn add(a: i64, b: i64) -> i64` keeps `add` as it is and adds a unit-like
/// `struct add {}`, so a native test can call either `add(1, 2)` or
/// `<add as weir::Task>::run(r#"{"a": 1, "b": 2}"#)`.
pub trait Task {
    /// The name the host knows the task by (`get-url` for `fn get_url`).
    const NAME: &'static str;

    /// The task's name, description and defaults (retries, timeout, cache policy...).
    fn info() -> TaskInfo;

    /// Runs the task on `input`, a JSON object with one field per parameter, and returns its
    /// output as JSON.
    fn run(input: &str) -> Result<String, TaskError>;

    /// The task's own cache key for `input` (tasks declared with `cache_key = ...`); `None`
    /// means: do not cache this run.
    fn cache_key(input: &str) -> Option<String>;
}

/// A task's defaults as `#[weir::task]` computes them at compile time.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct TaskSpec {
    pub name: &'static str,
    pub description: Option<&'static str>,
    pub version: Option<&'static str>,
    pub tags: &'static [&'static str],
    pub retries: u32,
    pub retry_delays_ms: &'static [u64],
    /// (base, max) in milliseconds.
    pub retry_backoff_ms: Option<(u64, Option<u64>)>,
    pub retry_jitter_factor: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub cache_policy: CachePolicy,
    pub cache_expiration_ms: Option<u64>,
    pub log_prints: bool,
    pub run_name: Option<&'static str>,
    /// `env:NAME`, `dir:/path[:rw]`, `http` or `http:HOST`, checked by the macro.
    pub needs: &'static [&'static str],
}

impl TaskSpec {
    pub fn to_info(&self) -> TaskInfo {
        TaskInfo {
            name: self.name.into(),
            description: self.description.map(Into::into),
            version: self.version.map(Into::into),
            tags: self.tags.iter().map(|&tag| tag.into()).collect(),
            retries: self.retries,
            retry_delays_ms: self.retry_delays_ms.to_vec(),
            retry_backoff: self
                .retry_backoff_ms
                .map(|(base_ms, max_ms)| ExponentialBackoff { base_ms, max_ms }),
            retry_jitter_factor: self.retry_jitter_factor,
            timeout_ms: self.timeout_ms,
            cache_policy: self.cache_policy,
            cache_expiration_ms: self.cache_expiration_ms,
            log_prints: self.log_prints,
            run_name: self.run_name.map(Into::into),
            input_schema: None,
            output_schema: None,
            needs: self.needs.iter().map(|need| (*need).to_owned()).collect(),
        }
    }
}

/// One row of the dispatch table `weir::export!` builds.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct TaskEntry {
    pub name: &'static str,
    pub info: fn() -> TaskInfo,
    pub run: fn(&str) -> Result<String, TaskError>,
    pub cache_key: fn(&str) -> Option<String>,
}

impl TaskEntry {
    pub const fn of<T: Task>() -> Self {
        Self {
            name: T::NAME,
            info: T::info,
            run: T::run,
            cache_key: T::cache_key,
        }
    }
}

/// Fails compilation of `weir::export!` when two tasks share a name.
#[doc(hidden)]
pub const fn assert_unique_names(tasks: &[TaskEntry]) {
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i + 1;
        while j < tasks.len() {
            if str_eq(tasks[i].name, tasks[j].name) {
                panic!(
                    "weir::export!: two tasks have the same name; \
                     give one another with #[weir::task(name = \"...\")]"
                );
            }
            j += 1;
        }
        i += 1;
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The `info` export: every task's defaults.
#[doc(hidden)]
pub fn info(tasks: &[TaskEntry]) -> Vec<TaskInfo> {
    tasks.iter().map(|task| (task.info)()).collect()
}

/// The `run` export: runs the task named `name`.
#[doc(hidden)]
pub fn run(tasks: &[TaskEntry], name: &str, input: &str) -> Result<String, TaskError> {
    crate::panic::install_hook();
    let task = find(tasks, name)?;
    (task.run)(input)
}

/// The `cache-key` export.
#[doc(hidden)]
pub fn cache_key(tasks: &[TaskEntry], name: &str, input: &str) -> Option<String> {
    crate::panic::install_hook();
    // An unknown task cannot run either; `run` reports it.
    let task = find(tasks, name).ok()?;
    (task.cache_key)(input)
}

fn find<'a>(tasks: &'a [TaskEntry], name: &str) -> Result<&'a TaskEntry, TaskError> {
    tasks.iter().find(|task| task.name == name).ok_or_else(|| {
        let names: Vec<String> = tasks
            .iter()
            .map(|task| format!("`{}`", task.name))
            .collect();
        TaskError::fatal(format!(
            "this plugin has no task `{name}`; its tasks are {}",
            names.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &'static str) -> TaskEntry {
        TaskEntry {
            name,
            info: || unreachable!("not called"),
            run: |input| Ok(input.to_uppercase()),
            cache_key: |input| Some(input.len().to_string()),
        }
    }

    #[test]
    fn run_dispatches_on_the_name() {
        let tasks = [entry("a"), entry("b")];
        assert_eq!(run(&tasks, "b", "x").unwrap(), "X");
        assert_eq!(cache_key(&tasks, "a", "xyz").as_deref(), Some("3"));
    }

    #[test]
    fn an_unknown_task_is_fatal_and_lists_the_tasks() {
        let tasks = [entry("add"), entry("get-url")];
        let error = run(&tasks, "sub", "{}").unwrap_err();
        assert!(error.is_fatal());
        assert_eq!(
            error.message(),
            "this plugin has no task `sub`; its tasks are `add`, `get-url`"
        );
        assert_eq!(cache_key(&tasks, "sub", "{}"), None);
    }

    #[test]
    fn str_eq_compares_bytes() {
        assert!(str_eq("add", "add"));
        assert!(!str_eq("add", "ad"));
        assert!(!str_eq("add", "adD"));
    }
}
