//! Tenants and what a token lets its holder do.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A tenant's name, which is also its id: 1 to 63 lowercase ASCII letters, digits and
/// `-`, starting with a letter or a digit (`acme`, `team-7`). Everything a tenant owns
/// (runs, logs, results, plugins, cache entries, concurrency limits) is stored under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// Why a text is not a tenant's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a tenant name: use 1 to 63 lowercase letters, digits and `-`, starting with a letter or a digit"
)]
pub struct TenantNameError(pub String);

impl TenantId {
    /// The tenant of a store used by one person: it exists without being created, and a
    /// store with no other tenant needs no token.
    pub const DEFAULT: &'static str = "default";
    /// The longest name.
    pub const MAX_LEN: usize = 63;

    pub fn default_tenant() -> Self {
        TenantId(Self::DEFAULT.to_owned())
    }

    pub fn parse(name: &str) -> Result<Self, TenantNameError> {
        let valid = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !name.starts_with('-');
        if valid {
            Ok(TenantId(name.to_owned()))
        } else {
            Err(TenantNameError(name.to_owned()))
        }
    }

    /// Wraps a name read back from the store (checked when it was written).
    pub fn from_stored(name: impl Into<String>) -> Self {
        TenantId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        TenantId::parse(&name)
    }
}

impl From<TenantId> for String {
    fn from(tenant: TenantId) -> String {
        tenant.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// What a token lets its holder do within its tenant; each scope includes the ones
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Read runs, logs, results, plugins, limits and the cache.
    Read,
    /// Also submit, cancel and resume runs, and upload plugins.
    Run,
    /// Also change the tenant's concurrency limits and clear its cache.
    Admin,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Run => "run",
            TokenScope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<TokenScope> {
        match text {
            "read" => Some(TokenScope::Read),
            "run" => Some(TokenScope::Run),
            "admin" => Some(TokenScope::Admin),
            _ => None,
        }
    }

    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: TokenScope) -> bool {
        self >= needed
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_short_lowercase_slugs() {
        for good in ["default", "acme", "team-7", "7", &"a".repeat(63)] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "a b",
            "a/b",
            "é",
            &"a".repeat(64),
            "a_b",
        ] {
            let error = TenantId::parse(bad).unwrap_err();
            assert!(error.to_string().contains("is not a tenant name"), "{bad}");
        }
    }

    #[test]
    fn each_scope_includes_the_ones_before_it() {
        assert!(TokenScope::Admin.allows(TokenScope::Run));
        assert!(TokenScope::Run.allows(TokenScope::Read));
        assert!(!TokenScope::Read.allows(TokenScope::Run));
        assert!(!TokenScope::Run.allows(TokenScope::Admin));
        for scope in [TokenScope::Read, TokenScope::Run, TokenScope::Admin] {
            assert_eq!(TokenScope::parse(scope.as_str()), Some(scope));
        }
    }
}
