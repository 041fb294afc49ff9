//! Redis servers for tests.

use std::path::PathBuf;

use testcontainers::{
    ContainerRequest, GenericImage, ImageExt,
    core::{IntoContainerPort, Mount, WaitFor},
};
use tokio::sync::OnceCell;

use crate::container::{Server, image, run_id, shared};

const PORT: u16 = 6379;

/// The Redis image under test: `DLOCK_REDIS_IMAGE`, or the official `redis:7`.
pub fn redis_image() -> GenericImage {
    image("DLOCK_REDIS_IMAGE", "redis:7")
}

fn request(args: &[String]) -> ContainerRequest<GenericImage> {
    // The bare server refuses outside clients: listen on every address, no protected mode.
    let mut cmd = vec![
        "redis-server",
        "--protected-mode",
        "no",
        "--bind",
        "0.0.0.0",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    cmd.extend(args.iter().cloned());
    // Redis 7.0 logs "Ready to accept connections", 7.2 adds "tcp" or "tls".
    let ready = WaitFor::message_on_stdout("Ready to accept connections");
    redis_image()
        .with_exposed_port(PORT.tcp())
        .with_wait_for(ready)
        .with_cmd(cmd)
}

/// `redis://127.0.0.1:<port>` of the run's shared Redis, started on first use.
pub async fn shared_redis_url() -> String {
    static PORT_OF_SHARED: OnceCell<u16> = OnceCell::const_new();
    let port = PORT_OF_SHARED
        .get_or_init(|| async {
            let name = format!("dlock-test-redis-{}", run_id());
            shared(&name, request(&[]), PORT).await
        })
        .await;
    format!("redis://127.0.0.1:{port}")
}

/// `redis://127.0.0.1:<port>` of `n` shared, independent Redis servers (Redlock's
/// nodes), started on first use; the same `n` servers for the whole test run.
pub async fn shared_redis_nodes(n: usize) -> Vec<String> {
    static PORTS: OnceCell<Vec<u16>> = OnceCell::const_new();
    let ports = PORTS
        .get_or_init(|| async {
            let starts = (0..5).map(|i| {
                let name = format!("dlock-test-redis-node{i}-{}", run_id());
                async move { shared(&name, request(&[]), PORT).await }
            });
            futures::future::join_all(starts).await
        })
        .await;
    assert!(n <= ports.len(), "at most {} shared nodes", ports.len());
    ports[..n]
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect()
}

/// `redlock://host:port,...` over the first `n` of [`shared_redis_nodes`].
pub async fn shared_redlock_url(n: usize) -> String {
    let hosts: Vec<String> = shared_redis_nodes(n)
        .await
        .iter()
        .map(|url| url.trim_start_matches("redis://").to_owned())
        .collect();
    format!("redlock://{}", hosts.join(","))
}

/// How to start a dedicated Redis.
#[derive(Default, Clone)]
pub struct RedisOptions {
    /// Extra server arguments (`--requirepass`, `--tls-port`, ...).
    pub args: Vec<String>,
    /// Publish on this host port, so it stays the same across a restart.
    pub host_port: Option<u16>,
    /// Host directories mounted read-only: (host path, container path).
    pub mounts: Vec<(PathBuf, String)>,
    /// Run in the host's network, listening on 127.0.0.1:`host_port` itself, with
    /// no Docker port proxy between: a killed server's connections close at once,
    /// as a real server's do, instead of when the client next writes.
    pub host_network: bool,
}

impl RedisOptions {
    /// A server that keeps nothing on disk (no snapshots, no AOF), published on
    /// `host_port` so a restart keeps its address: one a fault test restarts empty.
    pub fn volatile_on(host_port: u16) -> RedisOptions {
        RedisOptions {
            args: ["--save", "", "--appendonly", "no"]
                .map(String::from)
                .to_vec(),
            host_port: Some(host_port),
            ..RedisOptions::default()
        }
    }
}

/// A Redis for one test (one a fault test may pause or restart); removed when dropped.
pub async fn start_redis(options: RedisOptions) -> Server {
    if options.host_network {
        let port = options
            .host_port
            .expect("a server in the host's network needs host_port");
        let mut args = options.args.clone();
        args.extend([
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ]);
        return Server::start_on_host(request(&args).with_network("host"), port).await;
    }
    let mut req = request(&options.args);
    if let Some(host_port) = options.host_port {
        req = req.with_mapped_port(host_port, PORT.tcp());
    }
    for (host, container) in &options.mounts {
        req = req.with_mount(
            Mount::bind_mount(host.to_string_lossy().into_owned(), container.clone())
                .with_access_mode(testcontainers::core::AccessMode::ReadOnly),
        );
    }
    Server::start(req, PORT).await
}

/// A Redis serving clients over TLS only (no plain port), with `server.pem` and
/// `server.key` from the host directory `certs` (a [`TestCertificate`](crate::TestCertificate)'s).
/// Clients need not present a certificate.
pub async fn start_redis_tls(certs: &std::path::Path) -> Server {
    start_redis(RedisOptions {
        args: [
            "--port",
            "0",
            "--tls-port",
            "6379",
            "--tls-cert-file",
            "/tls/server.pem",
            "--tls-key-file",
            "/tls/server.key",
            "--tls-ca-cert-file",
            "/tls/server.pem",
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec(),
        mounts: vec![(certs.to_path_buf(), "/tls".into())],
        ..RedisOptions::default()
    })
    .await
}
