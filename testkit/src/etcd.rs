//! etcd servers for tests.

use testcontainers::{
    ContainerRequest, GenericImage, ImageExt,
    core::{IntoContainerPort, WaitFor},
};
use tokio::sync::OnceCell;

use crate::container::{Server, image, run_id, shared};

const PORT: u16 = 2379;

/// The etcd image under test: `DLOCK_ETCD_IMAGE`, or the official image.
pub fn etcd_image() -> GenericImage {
    image("DLOCK_ETCD_IMAGE", "gcr.io/etcd-development/etcd:v3.5.17")
}

fn request(tls: bool) -> ContainerRequest<GenericImage> {
    // The bare server listens on localhost only: listen on every address.
    let scheme = if tls { "https" } else { "http" };
    let mut cmd: Vec<String> = [
        "etcd",
        "--name",
        "n0",
        "--data-dir",
        "/tmp/etcd",
        "--listen-client-urls",
        &format!("{scheme}://0.0.0.0:2379"),
        "--advertise-client-urls",
        &format!("{scheme}://127.0.0.1:2379"),
    ]
    .map(String::from)
    .to_vec();
    if tls {
        cmd.extend(
            [
                "--cert-file",
                "/tls/server.pem",
                "--key-file",
                "/tls/server.key",
            ]
            .map(String::from),
        );
    }
    etcd_image()
        .with_exposed_port(PORT.tcp())
        .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
        .with_cmd(cmd)
}

/// `etcd://127.0.0.1:<port>` of the run's shared single-node etcd, started on first use.
pub async fn shared_etcd_url() -> String {
    static PORT_OF_SHARED: OnceCell<u16> = OnceCell::const_new();
    let port = PORT_OF_SHARED
        .get_or_init(|| async {
            let name = format!("dlock-test-etcd-{}", run_id());
            shared(&name, request(false), PORT).await
        })
        .await;
    format!("etcd://127.0.0.1:{port}")
}

/// A single-node etcd for one test (one it may reconfigure, pause or stop); removed
/// when dropped.
pub async fn start_etcd() -> Server {
    Server::start(request(false), PORT).await
}

/// A single-node etcd serving clients over TLS with `server.pem` and `server.key`
/// from the host directory `certs`.
pub async fn start_etcd_tls(certs: &std::path::Path) -> Server {
    let mount =
        testcontainers::core::Mount::bind_mount(certs.to_string_lossy().into_owned(), "/tls")
            .with_access_mode(testcontainers::core::AccessMode::ReadOnly);
    Server::start(request(true).with_mount(mount), PORT).await
}
