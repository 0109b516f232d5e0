//! Why a task attempt failed, and whether another attempt may help.

use std::fmt;

/// The result type of a fallible task: `fn fetch(url: String) -> weir::Result<Page>`.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// Why a task attempt did not produce an output.
///
/// A *retriable* error lets the host try again while the task has retries left; a *fatal* error
/// fails the run at once. The `?` operator turns any [`std::error::Error`] into a retriable
/// `TaskError` whose message is the error and its sources joined by `": "`:
///
/// ```
/// fn read_config(path: String) -> weir::Result<String> {
///     if path.is_empty() {
///         return Err(weir::TaskError::fatal("`path` must not be empty"));
///     }
///     Ok(std::fs::read_to_string(path)?) // an I/O error is retriable
/// }
/// # assert!(read_config(String::new()).unwrap_err().is_fatal());
/// ```
///
/// `TaskError` deliberately does not implement [`std::error::Error`] (as `anyhow::Error` does
/// not): that is what lets it convert from every error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    kind: ErrorKind,
    message: String,
}

/// Whether a [`TaskError`] may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Another attempt may succeed: the host retries while retries remain.
    Retriable,
    /// Retrying cannot help (bad input, a broken invariant): the run fails at once.
    Fatal,
}

impl TaskError {
    /// An error after which another attempt may succeed (a timeout, an unavailable service).
    pub fn retriable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retriable,
            message: message.into(),
        }
    }

    /// An error that retrying cannot fix (invalid input, a broken invariant).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }

    /// Whether this error is retriable or fatal.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `true` when retrying cannot help.
    pub fn is_fatal(&self) -> bool {
        self.kind == ErrorKind::Fatal
    }

    /// The message shown to the user.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<E> for TaskError
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// A retriable error whose message is `error` followed by its sources, joined by `": "`.
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retriable(message)
    }
}

impl From<TaskError> for crate::bindings::weir::task::types::TaskError {
    fn from(error: TaskError) -> Self {
        match error.kind {
            ErrorKind::Retriable => Self::Retriable(error.message),
            ErrorKind::Fatal => Self::Fatal(error.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not load the page")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn question_mark_makes_a_retriable_error_with_the_source_chain() {
        fn load() -> Result<()> {
            Err(Outer(std::io::Error::other("connection reset")))?;
            Ok(())
        }
        let error = load().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Retriable);
        assert_eq!(
            error.to_string(),
            "could not load the page: connection reset"
        );
    }

    #[test]
    fn fatal_and_retriable_map_to_the_wit_variants() {
        use crate::bindings::weir::task::types::TaskError as Wit;
        assert!(matches!(Wit::from(TaskError::fatal("no")), Wit::Fatal(m) if m == "no"));
        assert!(matches!(
            Wit::from(TaskError::retriable("later")),
            Wit::Retriable(m) if m == "later"
        ));
    }
}
