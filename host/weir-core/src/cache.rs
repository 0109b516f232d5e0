use serde::{Deserialize, Serialize};
use std::fmt;

use crate::json::canonical_json;

/// blake3 of a component's bytes, in hex: what a plugin is known by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct ComponentDigest(String);

impl ComponentDigest {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ComponentDigest(blake3::hash(bytes).to_hex().to_string())
    }

    pub fn from_hex(hex: impl Into<String>) -> Self {
        ComponentDigest(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, enough to tell plugins apart on a screen.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether and how a task's result is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CachePolicy {
    /// Never reuse a result.
    #[default]
    None,
    /// Same component, task, version and input → same result.
    Inputs,
    /// Same component, task, version and plugin-computed key → same result.
    CustomKey,
}

impl CachePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::None => "none",
            CachePolicy::Inputs => "inputs",
            CachePolicy::CustomKey => "custom-key",
        }
    }
}

/// The key a cached result is stored under: blake3 over the component digest, the
/// task name and version, and either the canonical input JSON or the plugin's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn for_input(
        component: &ComponentDigest,
        task: &str,
        version: Option<&str>,
        input: &serde_json::Value,
    ) -> Self {
        Self::derive(component, task, version, "input", &canonical_json(input))
    }

    pub fn for_plugin_key(
        component: &ComponentDigest,
        task: &str,
        version: Option<&str>,
        plugin_key: &str,
    ) -> Self {
        Self::derive(component, task, version, "key", plugin_key)
    }

    fn derive(
        component: &ComponentDigest,
        task: &str,
        version: Option<&str>,
        kind: &str,
        material: &str,
    ) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("weir cache key v1");
        // Each part is length-prefixed so that no two different tuples hash alike.
        for part in [
            component.as_str(),
            task,
            version.unwrap_or(""),
            kind,
            material,
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        CacheKey(hasher.finalize().to_hex().to_string())
    }

    pub fn from_hex(hex: impl Into<String>) -> Self {
        CacheKey(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_depends_on_every_part() {
        let digest = ComponentDigest::of_bytes(b"component");
        let base = CacheKey::for_input(&digest, "add", Some("1"), &json!({"a": 1, "b": 2}));
        let reordered = CacheKey::for_input(&digest, "add", Some("1"), &json!({"b": 2, "a": 1}));
        assert_eq!(base, reordered);
        assert_ne!(
            base,
            CacheKey::for_input(&digest, "add", Some("2"), &json!({"a": 1, "b": 2}))
        );
        assert_ne!(
            base,
            CacheKey::for_input(&digest, "sub", Some("1"), &json!({"a": 1, "b": 2}))
        );
        assert_ne!(
            base,
            CacheKey::for_input(&digest, "add", Some("1"), &json!({"a": 1, "b": 3}))
        );
        let other = ComponentDigest::of_bytes(b"other");
        assert_ne!(
            base,
            CacheKey::for_input(&other, "add", Some("1"), &json!({"a": 1, "b": 2}))
        );
    }
}
