use std::path::PathBuf;

/// What a task may touch beyond its own memory. Nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Names of environment variables the task may read; values come from the secrets
    /// file or the host's environment when the run starts.
    pub env: Vec<String>,
}

impl Grants {
    /// Adds `other`'s grants to these (a node's to its task's, say).
    pub fn extend(&mut self, other: &Grants) {
        for dir in &other.dirs {
            if !self.dirs.contains(dir) {
                self.dirs.push(dir.clone());
            }
        }
        for name in &other.env {
            if !self.env.contains(name) {
                self.env.push(name.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty()
    }
}

/// A host directory mapped into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    /// Where the guest sees it, e.g. `/data`.
    pub guest: String,
    pub writable: bool,
}

impl DirGrant {
    /// Parses `HOST:GUEST[:ro|rw]` (read-only unless `rw`), or `HOST` alone, seen by the
    /// guest at the same path.
    pub fn parse(spec: &str) -> Result<DirGrant, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, guest, mode) = match parts.as_slice() {
            [host] => (*host, *host, "ro"),
            [host, guest] => (*host, *guest, "ro"),
            [host, guest, mode] => (*host, *guest, *mode),
            _ => return Err(format!("`{spec}` should be HOST:GUEST[:ro|rw]")),
        };
        let writable = match mode {
            "ro" => false,
            "rw" => true,
            other => return Err(format!("`{other}` in `{spec}` should be `ro` or `rw`")),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{spec}` should be HOST:GUEST[:ro|rw]"));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            writable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_parse() {
        assert_eq!(
            DirGrant::parse("data:/data:rw").unwrap(),
            DirGrant {
                host: "data".into(),
                guest: "/data".into(),
                writable: true
            }
        );
        assert!(!DirGrant::parse("data:/data").unwrap().writable);
        assert_eq!(DirGrant::parse("/srv").unwrap().guest, "/srv");
        assert!(
            DirGrant::parse("a:b:x")
                .unwrap_err()
                .contains("`ro` or `rw`")
        );
    }
}
