//! Configuration: from a URL or a builder. `Debug` and `Display` never show the password.

use std::{fmt, time::Duration};

use dlock_core::{Error, InvalidInput, duration_setting, redact_url};
use redis::{ConnectionInfo, IntoConnectionInfo};

use crate::keys::KeyLayout;

/// How to reach Redis and how to name keys there.
///
/// ```
/// use std::time::Duration;
/// use dlock_redis::RedisConfig;
///
/// let config = RedisConfig::builder()
///     .url("redis://app:s3cret@127.0.0.1:6379/2")
///     .prefix("billing:")
///     .operation_timeout(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(config.to_string(), "redis://app:***@127.0.0.1:6379/2 (prefix `billing:`)");
/// # Ok::<(), dlock_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) info: ConnectionInfo,
    pub(crate) layout: KeyLayout,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) retries: usize,
    pub(crate) tls_root_cert_pem: Option<Vec<u8>>,
}

/// Builds a [`RedisConfig`]; every setting but the URL has a default.
#[derive(Clone, Default)]
pub struct RedisConfigBuilder {
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    db: Option<i64>,
    prefix: String,
    connect_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    retries: Option<usize>,
    tls_root_cert_pem: Option<Vec<u8>>,
}

/// Default time to connect (and to fail against a port nobody listens on).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time one command may take before its outcome counts as unknown.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]` or `rediss://...` for TLS.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        Self::builder().url(url).build()
    }

    /// A builder; set at least the URL.
    pub fn builder() -> RedisConfigBuilder {
        RedisConfigBuilder::default()
    }

    /// The server's address, `host:port`, without credentials: for logs and errors.
    pub fn server_address(&self) -> String {
        match self.info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
            redis::ConnectionAddr::Unix(path) => path.display().to_string(),
            other => format!("{other}"),
        }
    }

    /// The key prefix (namespace).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The per-command timeout.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

impl RedisConfigBuilder {
    /// The server, as `redis://` or `rediss://` URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The ACL user (overrides the URL's).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password (overrides the URL's).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database index (overrides the URL's).
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// A namespace for every key dlock writes, for example `"billing:"`. It must not
    /// contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How many more times a lost connection is tried again, with growing pauses,
    /// before the command waiting on it fails (default 1). Commands are never sent
    /// twice. 0: one try, so a node that is down fails its commands at once.
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.retries = Some(retries);
        self
    }

    /// How long one command may take before its outcome counts as unknown (default 2 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Trust this CA certificate (PEM) for `rediss://` instead of the system's roots.
    pub fn tls_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert_pem = Some(pem.into());
        self
    }

    /// Checks everything, before any I/O.
    pub fn build(self) -> Result<RedisConfig, Error> {
        let url = self.url.ok_or_else(|| {
            Error::InvalidInput(InvalidInput::Option {
                name: "url",
                reason: "a Redis URL is required".into(),
            })
        })?;
        let bad_url = |reason: String| {
            Error::InvalidInput(InvalidInput::Url {
                url: redact_url(&url),
                reason,
            })
        };
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            return Err(bad_url(
                "expected redis://host[:port][/db] or rediss://...".into(),
            ));
        }
        let mut info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad_url(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        if let Some(db) = self.db {
            if db < 0 {
                return Err(Error::InvalidInput(InvalidInput::Option {
                    name: "db",
                    reason: format!("a database index is at least 0, not {db}"),
                }));
            }
            settings = settings.set_db(db);
        }
        info = info.set_redis_settings(settings);
        Ok(RedisConfig {
            layout: KeyLayout::new(&self.prefix)?,
            prefix: self.prefix,
            connect_timeout: duration_setting(
                "connect_timeout",
                self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            operation_timeout: duration_setting(
                "operation_timeout",
                self.operation_timeout,
                DEFAULT_OPERATION_TIMEOUT,
            )?,
            retries: self.retries.unwrap_or(1),
            tls_root_cert_pem: self.tls_root_cert_pem,
            info,
            url,
        })
    }
}

impl fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", redact_url(&self.url))?;
        if !self.prefix.is_empty() {
            write!(f, " (prefix `{}`)", self.prefix)?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.info.redis_settings().username())
            .field(
                "password",
                &self.info.redis_settings().password().map(|_| "***"),
            )
            .field("db", &self.info.redis_settings().db())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("tls_root_cert", &self.tls_root_cert_pem.is_some())
            .finish()
    }
}

impl fmt::Debug for RedisConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfigBuilder")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("prefix", &self.prefix)
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
            "http://h",
            "redis://",
            "redis://h:notaport",
            "redis://h/x",
            "redis+unix:///tmp/s",
        ] {
            let err = RedisConfig::from_url(url).expect_err(url);
            assert!(err.is_invalid_input(), "{url}: {err}");
        }
        let err = RedisConfig::builder().build().expect_err("no url");
        assert!(err.is_invalid_input());
        let err = RedisConfig::builder()
            .url("redis://h")
            .prefix("{x}")
            .build()
            .expect_err("brace");
        assert!(err.is_invalid_input());
        let err = RedisConfig::builder()
            .url("redis://h")
            .db(-1)
            .build()
            .expect_err("db");
        assert!(err.is_invalid_input());
        let err = RedisConfig::builder()
            .url("redis://h")
            .operation_timeout(Duration::ZERO)
            .build()
            .expect_err("zero timeout");
        assert!(err.is_invalid_input());
    }

    #[test]
    fn the_password_never_shows() {
        let config = RedisConfig::builder()
            .url("redis://u:hunter2@h:1/3")
            .build()
            .expect("valid");
        assert!(!format!("{config} {config:?}").contains("hunter2"));
        let config = RedisConfig::builder()
            .url("redis://h")
            .password("hunter2")
            .build()
            .expect("valid");
        assert!(!format!("{config} {config:?}").contains("hunter2"));
        let builder = RedisConfig::builder()
            .url("redis://:hunter2@h")
            .password("hunter2");
        assert!(!format!("{builder:?}").contains("hunter2"));
        let err = RedisConfig::from_url("redis://u:hunter2@h:bad").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
