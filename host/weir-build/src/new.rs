//! `weir new`: a plugin project with one example task and its unit test, that builds as is.

use std::path::{Path, PathBuf};

use crate::sdk::write_file;
use crate::{BuildError, Language, write_sdk};

/// Creates the project `name` in a new directory `parent/name` and returns its path.
///
/// The project holds a copy of the guest SDK (`weir/`, or `weir-sdk/` for Rust): the SDKs are not
/// published to a registry yet, and a copy keeps the project building and testable on its own.
pub fn new_project(language: Language, name: &str, parent: &Path) -> Result<PathBuf, BuildError> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() && fs_err::read_dir(&dir)?.next().is_some() {
        return Err(BuildError::Project(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    let files: Vec<(&str, String)> = match language {
        Language::Rust => vec![
            ("Cargo.toml", RUST_MANIFEST.replace("@NAME@", name)),
            ("src/lib.rs", RUST_LIB.replace("@NAME@", name)),
            (
                ".gitignore",
                "/target\n/dist\n/.weir-build\n/.weir\n".into(),
            ),
        ],
        Language::Python => vec![
            ("pyproject.toml", PYTHON_MANIFEST.replace("@NAME@", name)),
            ("tasks.py", PYTHON_TASKS.replace("@NAME@", name)),
            ("test_tasks.py", PYTHON_TEST.into()),
            (
                ".gitignore",
                "/dist\n/.weir-build\n/.weir\n__pycache__/\n".into(),
            ),
        ],
        Language::JavaScript => vec![
            ("package.json", JS_MANIFEST.replace("@NAME@", name)),
            ("tasks.js", JS_TASKS.replace("@NAME@", name)),
            ("tasks.test.js", JS_TEST.into()),
            (
                ".gitignore",
                "/dist\n/.weir-build\n/.weir\nnode_modules/\n".into(),
            ),
        ],
    };
    for (path, text) in files {
        write_file(&dir.join(path), &text)?;
    }
    let sdk_dir = match language {
        Language::Rust => dir.join("weir-sdk"),
        Language::Python | Language::JavaScript => dir.clone(),
    };
    write_sdk(language, &sdk_dir)?;
    Ok(dir)
}

/// Lowercase letters, digits and `-`, starting with a letter: valid as a crate, package and
/// file name alike.
fn check_name(name: &str) -> Result<(), BuildError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name != "weir";
    if valid {
        Ok(())
    } else {
        Err(BuildError::Project(format!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits and `-`, starting \
             with a letter (and not `weir`), e.g. `text-tools`"
        )))
    }
}

const RUST_MANIFEST: &str = r#"[package]
name = "@NAME@"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
# A component is a cdylib; `weir build` compiles it for wasm32-wasip2.
crate-type = ["cdylib"]

[dependencies]
# The weir SDK, copied here by `weir new`.
weir = { path = "weir-sdk/weir" }

[profile.release]
opt-level = "s"
strip = "debuginfo"

# A project of its own, even inside another workspace.
[workspace]
"#;

const RUST_LIB: &str = r##"//! The @NAME@ plugin: weir tasks in Rust. `weir build` makes it a WebAssembly component,
//! `weir task run dist/@NAME@.wasm --task hello --input '{"name": "you"}'` runs one.

/// Greets someone by name.
#[weir::task(retries = 2, timeout = "10s")]
fn hello(name: String) -> weir::Result<String> {
    if name.trim().is_empty() {
        // Fatal: no retry will make an empty name valid.
        return Err(weir::TaskError::fatal("the name is empty"));
    }
    weir::info!("greeting {name}");
    Ok(format!("Hello, {name}!"))
}

weir::export!(hello);

#[cfg(test)]
mod tests {
    use super::*;
    use weir::Task as _;

    #[test]
    fn greets_by_name() {
        assert_eq!(hello("weir".into()).unwrap(), "Hello, weir!");
    }

    #[test]
    fn reads_its_input_as_json() {
        assert_eq!(hello::run(r#"{"name": "weir"}"#).unwrap(), r#""Hello, weir!""#);
        assert!(hello::run(r#"{"nom": "weir"}"#).is_err());
    }
}
"##;

const PYTHON_MANIFEST: &str = r#"[project]
name = "@NAME@"
version = "0.1.0"
description = "weir tasks in Python"
requires-python = ">=3.10"

[tool.weir]
# The module holding the tasks; `weir build` makes it a component with componentize-py.
module = "tasks"
"#;

const PYTHON_TASKS: &str = r#""""The @NAME@ plugin: weir tasks in Python.

`weir build` makes it a WebAssembly component;
`weir task run dist/@NAME@.wasm --task hello --input '{"name": "you"}'` runs one.
"""

from weir import Fatal, get_run_logger, task


@task(retries=2, timeout_seconds=10)
def hello(name: str) -> str:
    """Greets someone by name."""
    if not name.strip():
        # Fatal: no retry will make an empty name valid.
        raise Fatal("the name is empty")
    get_run_logger().info("greeting %s", name)
    return f"Hello, {name}!"
"#;

const PYTHON_TEST: &str = r#"import unittest

from weir import Fatal

from tasks import hello


class HelloTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(hello("weir"), "Hello, weir!")

    def test_reads_its_input_as_json(self):
        self.assertEqual(hello.run_json('{"name": "weir"}'), '"Hello, weir!"')
        with self.assertRaises(Fatal):
            hello.run_json('{"nom": "weir"}')


if __name__ == "__main__":
    unittest.main()
"#;

const JS_MANIFEST: &str = r#"{
  "name": "@NAME@",
  "version": "0.1.0",
  "description": "weir tasks in JavaScript",
  "type": "module",
  "main": "tasks.js",
  "private": true,
  "scripts": {
    "test": "node --test"
  }
}
"#;

const JS_TASKS: &str = r#"// The @NAME@ plugin: weir tasks in JavaScript. `weir build` makes it a WebAssembly
// component; `weir task run dist/@NAME@.wasm --task hello --input '{"name": "you"}'` runs one.

import { Fatal, getRunLogger, task } from './weir/index.js';

/** Greets someone by name. */
export const hello = task({ retries: 2, timeoutSeconds: 10 }, async function hello({ name }) {
  if (typeof name !== 'string' || !name.trim()) {
    // Fatal: no retry will make a missing name valid.
    throw new Fatal('the name is missing or empty');
  }
  getRunLogger().info(`greeting ${name}`);
  return `Hello, ${name}!`;
});
"#;

const JS_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Fatal } from './weir/index.js';
import { hello } from './tasks.js';

test('greets by name', async () => {
  assert.equal(await hello({ name: 'weir' }), 'Hello, weir!');
});

test('an empty name is fatal', async () => {
  await assert.rejects(hello({ name: '' }), Fatal);
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_every_language() {
        for good in ["hello", "text-tools", "a1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Hello", "1abc", "a_b", "a-", "weir", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
