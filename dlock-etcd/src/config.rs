//! Configuration: from a URL or a builder. `Debug` never shows the password.

use std::{fmt, time::Duration};

use dlock_core::{Error, InvalidInput, duration_setting, redact_url};

/// How to reach etcd and where to keep locks there.
///
/// ```
/// use dlock_etcd::EtcdConfig;
///
/// let config = EtcdConfig::from_url("etcd://app:s3cret@10.0.0.1:2379,10.0.0.2:2379/billing/")?;
/// assert_eq!(config.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
/// assert_eq!(config.prefix(), "billing/");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), dlock_core::Error>(())
/// ```
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) user: Option<(String, String)>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) tls_ca_pem: Option<Vec<u8>>,
    /// Session mode's TTL; `None`: a lease per lock.
    pub(crate) session_ttl: Option<Duration>,
}

/// Builds an [`EtcdConfig`]; every setting but the endpoints has a default.
#[derive(Clone, Default)]
pub struct EtcdConfigBuilder {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    prefix: Option<String>,
    connect_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    keep_alive_interval: Option<Duration>,
    tls_ca_pem: Option<Vec<u8>>,
    session_ttl: Option<Duration>,
}

/// Where locks live unless a prefix is given. Under any prefix, keys live below a
/// layout version (`v2/`), so a later layout can coexist.
pub const DEFAULT_PREFIX: &str = "dlock/";

impl EtcdConfig {
    /// `etcd://[user:password@]host:port[,host:port...][/prefix/][?session=SECONDS]`,
    /// or `etcds://...` for TLS with the system's roots (use the builder to trust a
    /// private CA). `session=SECONDS` turns on session mode (see
    /// [`EtcdConfigBuilder::session`]).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| {
            Error::InvalidInput(InvalidInput::Url {
                url: redact_url(url),
                reason: reason.to_owned(),
            })
        };
        let (scheme, rest) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(rest), _) => ("http", rest),
            (_, Some(rest)) => ("https", rest),
            _ => {
                return Err(bad(
                    "expected etcd://host:port[,host:port...][/prefix/] or etcds://...",
                ));
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let mut session_ttl = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("session", seconds)) => {
                    let seconds: u64 = seconds
                        .parse()
                        .map_err(|_| bad("session=SECONDS takes whole seconds, as `session=10`"))?;
                    session_ttl = Some(Duration::from_secs(seconds));
                }
                _ => {
                    return Err(bad(&format!(
                        "unknown option `{pair}` (known: session=SECONDS)"
                    )));
                }
            }
        }
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let mut builder = Self::builder();
        let hosts = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| bad("credentials are user:password"))?;
                builder = builder.user(user, password);
                hosts
            }
            None => authority,
        };
        for host in hosts.split(',') {
            let valid_port = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid_port {
                return Err(bad(&format!("`{host}` is not host:port")));
            }
            builder = builder.endpoint(format!("{scheme}://{host}"));
        }
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            builder = builder.prefix(path);
        }
        if let Some(ttl) = session_ttl {
            builder = builder.session(ttl);
        }
        builder.build()
    }

    /// A builder; add at least one endpoint.
    pub fn builder() -> EtcdConfigBuilder {
        EtcdConfigBuilder::default()
    }

    /// The endpoints, as `http://host:port` (or `https://` for TLS).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The key prefix (namespace).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl EtcdConfigBuilder {
    /// Adds an endpoint, `http://host:port`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// User and password for etcd's authentication.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Where locks live (default `dlock/`); a trailing `/` is added if missing. Keys
    /// go below it, under the layout version: `[prefix]v2/lock/...`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long one request may take before its outcome counts as unknown (default 2 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// The gRPC keep-alive ping interval on the connection (default 10 s).
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// Session mode: one etcd lease of `ttl` (whole seconds, at least 2 s) for all
    /// of this client's locks, as etcd's own `concurrency.Session`, instead of a
    /// lease per lock (the default). An acquire and release then cost two raft
    /// commits instead of three, and no lease is granted or revoked per lock. Every
    /// acquisition must ask for exactly `ttl`; a lock is valid from the session's
    /// last refresh, which a background task makes every third of `ttl`. A lock
    /// cannot expire while its client lives; when the client dies, all its locks
    /// expire together, one `ttl` later.
    ///
    /// Use it for many short locks from long-lived clients. Keep a lease per lock
    /// when locks need TTLs of their own, or when a lock must expire on its own
    /// while its client lives on (a stuck task in a healthy process).
    pub fn session(mut self, ttl: Duration) -> Self {
        self.session_ttl = Some(ttl);
        self
    }

    /// Trust this CA certificate (PEM) for `https://` endpoints instead of the
    /// system's roots.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Checks everything, before any I/O.
    pub fn build(self) -> Result<EtcdConfig, Error> {
        let invalid = |name: &'static str, reason: &str| {
            Error::InvalidInput(InvalidInput::Option {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.endpoints.is_empty() {
            return Err(invalid(
                "endpoints",
                "at least one etcd endpoint is required",
            ));
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    "endpoints",
                    &format!("`{e}` is not http://host:port"),
                ));
            }
        }
        let tls = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if tls != 0 && tls != self.endpoints.len() {
            return Err(invalid(
                "endpoints",
                "mix of http:// and https:// endpoints",
            ));
        }
        let mut prefix = self.prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if prefix.is_empty() {
            return Err(invalid(
                "prefix",
                "an empty prefix would put locks among other data",
            ));
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        if let Some(ttl) = self.session_ttl
            && (ttl < Duration::from_secs(2) || ttl.subsec_nanos() != 0)
        {
            return Err(invalid(
                "session",
                &format!("{ttl:?}: a session's TTL is whole seconds, at least 2 s"),
            ));
        }
        Ok(EtcdConfig {
            session_ttl: self.session_ttl,
            endpoints: self.endpoints,
            user: self.user,
            prefix,
            connect_timeout: duration_setting(
                "connect_timeout",
                self.connect_timeout,
                Duration::from_secs(5),
            )?,
            operation_timeout: duration_setting(
                "operation_timeout",
                self.operation_timeout,
                Duration::from_secs(2),
            )?,
            keep_alive_interval: duration_setting(
                "keep_alive_interval",
                self.keep_alive_interval,
                Duration::from_secs(10),
            )?,
            tls_ca_pem: self.tls_ca_pem,
        })
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("password", &self.user.as_ref().map(|_| "***"))
            .field("prefix", &self.prefix)
            .field("session_ttl", &self.session_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EtcdConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfigBuilder")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("password", &self.user.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_typed_errors() {
        for url in [
            "",
            "etcd://",
            "http://127.0.0.1:2379",
            "etcd://127.0.0.1",
            "etcd://127.0.0.1:0",
            "etcd://127.0.0.1:2379,",
            "etcd://user@127.0.0.1:2379",
        ] {
            let err = EtcdConfig::from_url(url).expect_err(url);
            assert!(err.is_invalid_input(), "{url}: {err}");
        }
        assert!(
            EtcdConfig::builder()
                .build()
                .expect_err("no endpoints")
                .is_invalid_input()
        );
        let err = EtcdConfig::builder()
            .endpoint("127.0.0.1:2379")
            .build()
            .expect_err("scheme");
        assert!(err.is_invalid_input());
    }

    #[test]
    fn urls_name_endpoints_credentials_and_prefix() {
        let config = EtcdConfig::from_url("etcd://u:pw@127.0.0.1:2379,127.0.0.2:2379/app/locks")
            .expect("valid");
        assert_eq!(
            config.endpoints(),
            ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]
        );
        assert_eq!(config.prefix(), "app/locks/");
        assert!(!format!("{config:?}").contains("pw"));
        let tls = EtcdConfig::from_url("etcds://127.0.0.1:2379").expect("valid");
        assert_eq!(tls.endpoints(), ["https://127.0.0.1:2379"]);
        let mixed = EtcdConfig::builder()
            .endpoint("http://127.0.0.1:2379")
            .endpoint("https://127.0.0.1:2380")
            .build();
        assert!(mixed.expect_err("mixed schemes").is_invalid_input());
        let err = EtcdConfig::from_url("etcd://u:pw@127.0.0.1:x").expect_err("bad port");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}
