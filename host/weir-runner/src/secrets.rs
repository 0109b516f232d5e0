//! Secrets files: `NAME=value` lines (`#` starts a comment), read once per process.
//! A granted environment variable takes its value from here before the host's
//! environment, and such values are redacted from everything a run records or shows.

use std::collections::HashMap;
use std::path::Path;

/// Reads a secrets file. Errors name the file and the line.
pub fn load_secrets(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the secrets file {}: {error}", path.display()))?;
    let mut secrets = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or_else(|| {
            format!(
                "{} line {}: expected NAME=value",
                path.display(),
                number + 1
            )
        })?;
        let value = value.trim();
        // Quotes around a value are not part of it.
        let value = value
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(value);
        secrets.insert(name.trim().to_owned(), value.to_owned());
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_values() {
        let dir = std::env::temp_dir().join(format!("weir-secrets-{}", std::process::id()));
        std::fs::write(&dir, "# tokens\nAPI_TOKEN = \"s3cr3t=x\"\n\nOTHER=plain\n").unwrap();
        let secrets = load_secrets(&dir).unwrap();
        assert_eq!(secrets["API_TOKEN"], "s3cr3t=x");
        assert_eq!(secrets["OTHER"], "plain");
        std::fs::write(&dir, "no equals sign\n").unwrap();
        assert!(
            load_secrets(&dir)
                .unwrap_err()
                .ends_with("line 1: expected NAME=value")
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
