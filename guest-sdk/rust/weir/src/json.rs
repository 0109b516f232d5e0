//! A task's input and output as JSON: the code `#[weir::task]` generates calls these.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::TaskError;

/// Parses `input` (a JSON object, or `null` for "no arguments") into a task's parameters.
///
/// A wrong input is fatal (retrying cannot fix it) and names the field:
/// ``invalid input for task `add`: b: invalid type: string "x", expected i64``.
#[doc(hidden)]
pub fn input<T: DeserializeOwned>(task: &str, input: &str) -> Result<T, TaskError> {
    let value = input_object(input)
        .map_err(|reason| TaskError::fatal(format!("invalid input for task `{task}`: {reason}")))?;
    // Deserializing from a `Value` rather than the text keeps line and column out of the
    // message: the input is one line written by a program, the field path says more.
    serde_path_to_error::deserialize(value).map_err(|error| {
        TaskError::fatal(format!(
            "invalid input for task `{task}`: {}",
            describe(&error)
        ))
    })
}

/// `b: invalid type: ...`: the path of the wrong field, then what is wrong with it. An unknown
/// field is named by the message already, so the path stops at its parent.
fn describe(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let message = error.inner().to_string();
    let mut path = error.path().to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        && let Some(parent) = path.strip_suffix(field)
    {
        path = parent.trim_end_matches('.').to_owned();
    }
    if path.is_empty() || path == "." {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// The input as a JSON object; `null` stands for `{}`.
fn input_object(input: &str) -> Result<Value, String> {
    match serde_json::from_str(input) {
        Ok(Value::Null) => Ok(Value::Object(serde_json::Map::new())),
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(format!(
            "expected a JSON object with one field per parameter, found {}",
            kind(&other)
        )),
        Err(error) => Err(format!("not JSON: {error}")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Serializes a task's output; a value serde_json cannot represent is a fatal error.
#[doc(hidden)]
pub fn output<T: Serialize + ?Sized>(task: &str, output: &T) -> Result<String, TaskError> {
    serde_json::to_string(output).map_err(|error| {
        TaskError::fatal(format!(
            "the output of task `{task}` cannot be serialized as JSON: {error}"
        ))
    })
}

/// Serializes the output of a task that returns a `Result`.
#[doc(hidden)]
pub fn output_result<T, E>(task: &str, result: Result<T, E>) -> Result<String, TaskError>
where
    T: Serialize,
    E: Into<TaskError>,
{
    output(task, &result.map_err(Into::into)?)
}

/// The key a `cache_key = ...` function computes for `input`; no key (do not cache) when the input
/// is not a JSON object, since the run itself will fail.
#[doc(hidden)]
pub fn custom_cache_key(input: &str, key: impl FnOnce(&Value) -> Option<String>) -> Option<String> {
    key(&input_object(input).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Add {
        a: i64,
        b: Option<i64>,
    }

    fn add(text: &str) -> Result<Add, String> {
        input::<Add>("add", text).map_err(|error| {
            assert!(error.is_fatal(), "input errors are fatal: {error:?}");
            error.to_string()
        })
    }

    #[test]
    fn input_errors_name_the_task_and_the_field() {
        assert_eq!(
            add(r#"{"a": 1, "b": "x"}"#).unwrap_err(),
            r#"invalid input for task `add`: b: invalid type: string "x", expected i64"#
        );
        assert_eq!(
            add(r#"{"b": 2}"#).unwrap_err(),
            "invalid input for task `add`: missing field `a`"
        );
        assert_eq!(
            add(r#"{"a": 1, "c": 2}"#).unwrap_err(),
            "invalid input for task `add`: unknown field `c`, expected `a` or `b`"
        );
    }

    #[test]
    fn nested_fields_are_named_by_their_path() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // only deserialized
        struct Outer {
            page: Page,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Page {
            urls: Vec<String>,
        }
        let error = |text| input::<Outer>("t", text).unwrap_err().to_string();
        assert_eq!(
            error(r#"{"page": {"urls": ["a", 1]}}"#),
            "invalid input for task `t`: page.urls[1]: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            error(r#"{"page": {"urls": [], "c": 1}}"#),
            "invalid input for task `t`: page: unknown field `c`, expected `urls`"
        );
    }

    #[test]
    fn input_must_be_a_json_object() {
        assert_eq!(
            add("{a: 1}").unwrap_err(),
            "invalid input for task `add`: not JSON: key must be a string at line 1 column 2"
        );
        assert_eq!(
            add("[1, 2]").unwrap_err(),
            "invalid input for task `add`: expected a JSON object with one field per parameter, \
             found an array"
        );
    }

    #[test]
    fn null_input_is_an_empty_object() {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nothing {}
        assert!(input::<Nothing>("t", "null").is_ok());
        assert!(input::<Nothing>("t", " {} ").is_ok());
        assert_eq!(
            add("null").unwrap_err(),
            "invalid input for task `add`: missing field `a`"
        );
    }

    #[test]
    fn output_of_a_result_keeps_the_error() {
        let ok: Result<i64, TaskError> = Ok(3);
        assert_eq!(output_result("t", ok).unwrap(), "3");
        let err: Result<i64, std::io::Error> = Err(std::io::Error::other("disk full"));
        assert_eq!(
            output_result("t", err).unwrap_err(),
            TaskError::retriable("disk full")
        );
    }

    #[test]
    fn output_that_is_not_json_is_fatal() {
        let map = std::collections::HashMap::from([((1, 2), 3)]);
        let error = output("t", &map).unwrap_err();
        assert!(error.is_fatal());
        assert_eq!(
            error.message(),
            "the output of task `t` cannot be serialized as JSON: key must be a string"
        );
    }

    #[test]
    fn custom_cache_key_sees_the_input_object() {
        let key = |input: &Value| input.get("id")?.as_str().map(str::to_owned);
        assert_eq!(
            custom_cache_key(r#"{"id": "x", "noise": 1}"#, key).as_deref(),
            Some("x")
        );
        assert_eq!(custom_cache_key("not json", key), None);
    }
}
