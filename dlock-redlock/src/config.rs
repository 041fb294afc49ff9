//! Configuration: from a `redlock://` URL or a builder. Passwords never show.

use std::{fmt, time::Duration};

use dlock_core::{Error, InvalidInput, redact_url};
use dlock_redis::RedisConfig;

/// The nodes and the quorum's settings.
///
/// ```
/// use std::time::Duration;
/// use dlock_redlock::RedlockConfig;
///
/// let config = RedlockConfig::from_url("redlock://app:s3cret@10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379")?;
/// assert_eq!(config.nodes().len(), 3);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// assert!(RedlockConfig::from_url("redlock://a:1,b:2,c:3?fencing=off").is_ok());
/// assert!(RedlockConfig::from_url("redlock://a:1,b:2,c:3?retries=5").is_err());
/// assert!(RedlockConfig::from_url("redlock://a:1").is_err()); // one node: use dlock-redis
/// # Ok::<(), dlock_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RedlockConfig {
    pub(crate) nodes: Vec<RedisConfig>,
    pub(crate) per_node_timeout: Option<Duration>,
    pub(crate) operation_timeout: Duration,
    pub(crate) fencing: bool,
    pub(crate) delayed_restarts: bool,
    pub(crate) max_ttl: Duration,
}

/// Builds a [`RedlockConfig`].
#[derive(Default)]
pub struct RedlockConfigBuilder {
    nodes: Vec<RedisConfig>,
    urls: Vec<String>,
    per_node_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    fencing: Option<bool>,
    delayed_restarts: Option<bool>,
    max_ttl: Option<Duration>,
}

/// The longest TTL by default, and so how long a restarted node gets no vote.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);
/// The shortest per-node timeout by default: 2 cores and five servers make a few
/// milliseconds flaky.
pub const MIN_PER_NODE_TIMEOUT: Duration = Duration::from_millis(50);

impl RedlockConfig {
    /// `redlock://[user:password@]host:port,host:port,host:port[/db][?options]`, or
    /// `redlocks://...` for TLS on every node. The credentials and the database
    /// apply to every node; the builder allows each its own. Options:
    /// `fencing=on|off`, `delayed_restarts=on|off` (both on by default).
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let bad = |reason: &str| {
            Error::InvalidInput(InvalidInput::Url {
                url: redact_url(url),
                reason: reason.to_owned(),
            })
        };
        let (scheme, rest) = match url.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("redlock") => ("redis", rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("redlocks") => ("rediss", rest),
            _ => {
                return Err(bad(
                    "expected redlock://host:port,host:port,host:port[/db] or redlocks://...",
                ));
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, format!("/{path}")),
            None => (rest, String::new()),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        let mut builder = Self::builder();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            let on = |v: &str| match v {
                "on" | "true" | "1" => Ok(true),
                "off" | "false" | "0" => Ok(false),
                _ => Err(bad(&format!("`{pair}`: expected on or off"))),
            };
            builder = match pair.split_once('=') {
                Some(("fencing", v)) => builder.fencing(on(v)?),
                Some(("delayed_restarts", v)) => builder.delayed_restarts(on(v)?),
                _ => {
                    return Err(bad(&format!(
                        "unknown option `{pair}` (known: fencing=on|off, delayed_restarts=on|off)"
                    )));
                }
            };
        }
        for host in hosts.split(',') {
            if host.is_empty() {
                return Err(bad("an empty node address"));
            }
            builder = builder.node_url(format!("{scheme}://{userinfo}{host}{path}"));
        }
        builder.build().map_err(|e| match e {
            // Name the whole URL, redacted, rather than one node's.
            Error::InvalidInput(InvalidInput::Url { reason, .. }) => bad(&reason),
            other => other,
        })
    }

    /// A builder; add at least two nodes (three or five make sense).
    pub fn builder() -> RedlockConfigBuilder {
        RedlockConfigBuilder::default()
    }

    /// The nodes' configurations.
    pub fn nodes(&self) -> &[RedisConfig] {
        &self.nodes
    }

    /// How many nodes make a quorum: a majority.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// The timeout of one node's request for a lease of `ttl`: the configured one,
    /// or 1 % of the TTL but at least 50 ms.
    pub fn per_node_timeout(&self, ttl: Duration) -> Duration {
        self.per_node_timeout
            .unwrap_or_else(|| (ttl / 100).max(MIN_PER_NODE_TIMEOUT))
    }

    /// The shortest TTL accepted: 100 ms, or more with a per-node timeout set, so
    /// that a lease keeps some validity after the drift (1 % + 2 ms) and one node's
    /// timeout. Refused before any request, as every TTL out of range is.
    pub fn min_ttl(&self) -> Duration {
        let floor = Duration::from_millis(100);
        match self.per_node_timeout {
            // In whole milliseconds, the TTL's granularity; `build` keeps per_node
            // below max_ttl, and saturating arithmetic keeps any value from panicking.
            Some(per_node) => {
                let ms = (per_node.as_secs_f64() * 1e3 + 2.0) / 0.99;
                floor.max(Duration::from_millis((ms.ceil() as u64).saturating_add(1)))
            }
            None => floor,
        }
    }
}

impl RedlockConfigBuilder {
    /// Adds a node by its configuration (its own credentials, TLS, timeouts).
    pub fn node(mut self, node: RedisConfig) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds a node by URL (`redis://...` or `rediss://...`).
    pub fn node_url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// One node's request timeout, below every TTL used (default: 1 % of the TTL,
    /// at least 50 ms).
    pub fn per_node_timeout(mut self, timeout: Duration) -> Self {
        self.per_node_timeout = Some(timeout);
        self
    }

    /// How long one operation on the quorum may take (default 2 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Whether acquisitions take a second round that makes fencing tokens (default
    /// on). Off: one round, `Capabilities::fencing` is false and `fence()` is 0.
    pub fn fencing(mut self, on: bool) -> Self {
        self.fencing = Some(on);
        self
    }

    /// Whether a node seen restarting (its `run_id` changed) gets no vote until it
    /// has been up for the maximum TTL (default on). Each vote then carries its
    /// connection's name, and every new connection is checked: the nodes' users
    /// need `CLIENT SETNAME`, `CLIENT GETNAME` and `INFO`.
    pub fn delayed_restarts(mut self, on: bool) -> Self {
        self.delayed_restarts = Some(on);
        self
    }

    /// The longest TTL accepted, and so how long a restarted node gets no vote
    /// (default 60 s).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// Checks the settings; no I/O.
    pub fn build(self) -> Result<RedlockConfig, Error> {
        let option = |name: &'static str, reason: String| {
            Error::InvalidInput(InvalidInput::Option { name, reason })
        };
        let mut nodes = self.nodes;
        for url in self.urls {
            // A node that is down fails at once, instead of after reconnect pauses
            // that could use up the per-node timeout.
            nodes.push(
                RedisConfig::builder()
                    .url(url)
                    .reconnect_retries(0)
                    .build()?,
            );
        }
        if nodes.len() < 2 {
            return Err(option(
                "nodes",
                format!(
                    "Redlock needs at least 2 nodes (3 or 5 make sense), not {}; for one Redis use dlock-redis",
                    nodes.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &nodes {
            if !seen.insert(node.server_address()) {
                return Err(option(
                    "nodes",
                    format!("the node {} is listed twice", node.server_address()),
                ));
            }
        }
        let operation_timeout = dlock_core::duration_setting(
            "operation_timeout",
            self.operation_timeout,
            Duration::from_secs(2),
        )?;
        let max_ttl = dlock_core::duration_setting("max_ttl", self.max_ttl, DEFAULT_MAX_TTL)?;
        if self.per_node_timeout.is_some_and(|t| t.is_zero()) {
            return Err(option("per_node_timeout", "must be above zero".into()));
        }
        // Every TTL must leave validity after one node's timeout, and no TTL is
        // above max_ttl: a per-node timeout that reaches it leaves no TTL usable.
        if let Some(per_node) = self.per_node_timeout
            && per_node.saturating_mul(100) >= max_ttl.saturating_mul(99)
        {
            return Err(option(
                "per_node_timeout",
                format!("{per_node:?} leaves no TTL up to max_ttl ({max_ttl:?}) any validity"),
            ));
        }
        Ok(RedlockConfig {
            nodes,
            per_node_timeout: self.per_node_timeout,
            operation_timeout,
            fencing: self.fencing.unwrap_or(true),
            delayed_restarts: self.delayed_restarts.unwrap_or(true),
            max_ttl,
        })
    }
}

impl fmt::Debug for RedlockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockConfig")
            .field("nodes", &self.nodes)
            .field("per_node_timeout", &self.per_node_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("fencing", &self.fencing)
            .field("delayed_restarts", &self.delayed_restarts)
            .field("max_ttl", &self.max_ttl)
            .finish()
    }
}

impl fmt::Display for RedlockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.server_address()).collect();
        write!(f, "redlock over {}", nodes.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> RedlockConfigBuilder {
        RedlockConfig::builder()
            .node_url("redis://a:1")
            .node_url("redis://b:1")
            .node_url("redis://c:1")
    }

    #[test]
    fn a_per_node_timeout_that_leaves_no_ttl_is_refused_and_none_panics() {
        for per_node in [Duration::MAX, Duration::from_secs(60), DEFAULT_MAX_TTL] {
            match three().per_node_timeout(per_node).build() {
                Err(Error::InvalidInput(InvalidInput::Option {
                    name: "per_node_timeout",
                    ..
                })) => {}
                other => panic!("{per_node:?}: expected a typed error, got {other:?}"),
            }
        }
        let config = three()
            .per_node_timeout(Duration::from_secs(1))
            .build()
            .expect("config");
        let min = config.min_ttl();
        assert!(
            min > Duration::from_secs(1) && min < config.max_ttl,
            "{min:?}"
        );
        // The floor when no per-node timeout is set.
        assert_eq!(
            three().build().expect("config").min_ttl(),
            Duration::from_millis(100)
        );
    }
}
