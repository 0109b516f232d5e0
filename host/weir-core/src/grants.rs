use std::path::PathBuf;

/// What a task may touch beyond its own memory. Nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Names of environment variables the task may read; values come from the secrets
    /// file or the host's environment when the run starts.
    pub env: Vec<String>,
    /// Hosts the task may send HTTP requests to.
    pub http: Vec<HttpGrant>,
}

impl Grants {
    /// Each grant as a person reads it: `dir /srv/data as /data (read-only)`,
    /// `env API_TOKEN`, `http api.github.com`.
    pub fn describe(&self) -> Vec<String> {
        let dirs = self.dirs.iter().map(|dir| {
            format!(
                "dir {} as {} ({})",
                dir.host.display(),
                dir.guest,
                if dir.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            )
        });
        let env = self.env.iter().map(|name| format!("env {name}"));
        let http = self.http.iter().map(|grant| format!("http {grant}"));
        dirs.chain(env).chain(http).collect()
    }

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
        for host in &other.http {
            if !self.http.contains(host) {
                self.http.push(host.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty() && self.http.is_empty()
    }

    /// Whether an HTTP request to `scheme://host:port` is granted.
    pub fn allows_http(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.http
            .iter()
            .any(|grant| grant.matches(scheme, host, port))
    }
}

/// A host directory mapped into the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Something a task declares it cannot work without.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Need {
    Env(String),
    Dir {
        guest: String,
        writable: bool,
    },
    /// HTTP to some host.
    AnyHttp,
    Http(String),
}

impl Need {
    /// Parses `env:NAME`, `dir:/path`, `dir:/path:rw`, `http` or `http:HOST`.
    pub fn parse(text: &str) -> Result<Need, String> {
        let invalid = || {
            format!(
                "`{text}` is not a need; expected `env:NAME`, `dir:/path`, `dir:/path:rw`, `http` or `http:HOST`"
            )
        };
        match text.split_once(':') {
            None if text == "http" => Ok(Need::AnyHttp),
            Some(("env", name)) if !name.is_empty() => Ok(Need::Env(name.to_owned())),
            Some(("http", host)) if !host.is_empty() => Ok(Need::Http(host.to_ascii_lowercase())),
            Some(("dir", path)) if !path.is_empty() => Ok(match path.strip_suffix(":rw") {
                Some(guest) => Need::Dir {
                    guest: guest.to_owned(),
                    writable: true,
                },
                None => Need::Dir {
                    guest: path.strip_suffix(":ro").unwrap_or(path).to_owned(),
                    writable: false,
                },
            }),
            _ => Err(invalid()),
        }
    }

    /// How to grant it, for messages.
    pub fn how_to_grant(&self) -> String {
        match self {
            Need::Env(name) => format!(
                "the environment variable `{name}` (--env {name}, or env = [\"{name}\"] on the node)"
            ),
            Need::Dir { guest, writable } => format!(
                "a {}directory at `{guest}` (--dir HOST:{guest}{}, or dirs = [\"HOST:{guest}{}\"] on the node)",
                if *writable { "writable " } else { "" },
                if *writable { ":rw" } else { "" },
                if *writable { ":rw" } else { "" }
            ),
            Need::AnyHttp => {
                "HTTP to some host (--allow-http HOST, or http = [\"HOST\"] on the node)".to_owned()
            }
            Need::Http(host) => format!(
                "HTTP to `{host}` (--allow-http {host}, or http = [\"{host}\"] on the node)"
            ),
        }
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Env(name) => write!(f, "env:{name}"),
            Need::Dir {
                guest,
                writable: true,
            } => write!(f, "dir:{guest}:rw"),
            Need::Dir {
                guest,
                writable: false,
            } => write!(f, "dir:{guest}"),
            Need::AnyHttp => f.write_str("http"),
            Need::Http(host) => write!(f, "http:{host}"),
        }
    }
}

impl TryFrom<String> for Need {
    type Error = String;
    fn try_from(text: String) -> Result<Need, String> {
        Need::parse(&text)
    }
}

impl From<Need> for String {
    fn from(need: Need) -> String {
        need.to_string()
    }
}

impl Grants {
    /// The first of `needs` these grants do not cover.
    pub fn first_missing<'a>(&self, needs: &'a [Need]) -> Option<&'a Need> {
        needs.iter().find(|need| !self.covers(need))
    }

    fn covers(&self, need: &Need) -> bool {
        match need {
            Need::Env(name) => self.env.contains(name),
            Need::Dir { guest, writable } => self.dirs.iter().any(|dir| {
                dir.guest.trim_end_matches('/') == guest.trim_end_matches('/')
                    && (dir.writable || !writable)
            }),
            Need::AnyHttp => !self.http.is_empty(),
            Need::Http(host) => self.http.iter().any(|grant| {
                grant.host == *host
                    || grant
                        .host
                        .strip_prefix("*.")
                        .is_some_and(|domain| host.ends_with(&format!(".{domain}")))
            }),
        }
    }
}

/// A host a task may reach over HTTP: `host`, `host:port`, `scheme://host[:port]`, or
/// `*.domain` for its subdomains. Without a port only the scheme's default port (80 for
/// http, 443 for https) is allowed; without a scheme, both.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpGrant {
    pub scheme: Option<String>,
    /// Lowercase; `*.example.com` matches subdomains of example.com, not example.com.
    pub host: String,
    pub port: Option<u16>,
}

impl HttpGrant {
    pub fn parse(spec: &str) -> Result<HttpGrant, String> {
        let (scheme, rest) = match spec.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                (Some(scheme.to_owned()), rest)
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "`{spec}`: the scheme `{scheme}` is not http or https"
                ));
            }
            None => (None, spec),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("`{spec}` should name a host, not a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| format!("`{spec}`: `{port}` is not a port"))?,
                ),
            ),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!(
                "`{spec}` should be HOST, HOST:PORT or SCHEME://HOST[:PORT]"
            ));
        }
        Ok(HttpGrant {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self
            .scheme
            .as_deref()
            .is_some_and(|granted| granted != scheme)
        {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_matches = match self.host.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => 0,
        };
        host_matches && port == self.port.unwrap_or(default_port)
    }
}

impl TryFrom<String> for HttpGrant {
    type Error = String;
    fn try_from(text: String) -> Result<HttpGrant, String> {
        HttpGrant::parse(&text)
    }
}

impl From<HttpGrant> for String {
    fn from(grant: HttpGrant) -> String {
        grant.to_string()
    }
}

impl std::fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
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

    #[test]
    fn http_grants_match_host_port_and_scheme() {
        let exact = HttpGrant::parse("127.0.0.1:8080").unwrap();
        assert!(exact.matches("http", "127.0.0.1", 8080));
        assert!(!exact.matches("http", "127.0.0.1", 8081));
        assert!(!exact.matches("http", "127.0.0.2", 8080));
        let default_port = HttpGrant::parse("api.github.com").unwrap();
        assert!(default_port.matches("https", "API.github.com", 443));
        assert!(!default_port.matches("https", "api.github.com", 8443));
        let wildcard = HttpGrant::parse("https://*.example.com").unwrap();
        assert!(wildcard.matches("https", "a.b.example.com", 443));
        assert!(!wildcard.matches("https", "example.com", 443));
        assert!(!wildcard.matches("http", "a.example.com", 80));
        assert!(HttpGrant::parse("ftp://x").is_err());
        assert!(HttpGrant::parse("host:port").is_err());
        assert_eq!(
            HttpGrant::parse("https://h:1").unwrap().to_string(),
            "https://h:1"
        );
    }

    #[test]
    fn needs_parse_and_are_checked_against_grants() {
        let needs: Vec<Need> = ["env:TOKEN", "dir:/data:rw", "http:api.github.com", "http"]
            .iter()
            .map(|text| Need::parse(text).unwrap())
            .collect();
        assert!(Need::parse("disk:/x").is_err());
        let mut grants = Grants::default();
        assert_eq!(grants.first_missing(&needs), Some(&needs[0]));
        grants.env.push("TOKEN".into());
        grants.dirs.push(DirGrant::parse("data:/data").unwrap());
        assert_eq!(
            grants.first_missing(&needs),
            Some(&needs[1]),
            "read-only is not enough"
        );
        grants.dirs[0].writable = true;
        grants
            .http
            .push(HttpGrant::parse("https://*.github.com").unwrap());
        assert_eq!(grants.first_missing(&needs), None);
        assert_eq!(needs[1].to_string(), "dir:/data:rw");
    }
}
