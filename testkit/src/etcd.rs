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

fn request() -> ContainerRequest<GenericImage> {
    // The bare server listens on localhost only: listen on every address.
    let cmd = [
        "etcd",
        "--name",
        "n0",
        "--data-dir",
        "/tmp/etcd",
        "--listen-client-urls",
        "http://0.0.0.0:2379",
        "--advertise-client-urls",
        "http://127.0.0.1:2379",
    ];
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
            shared(&name, request(), PORT).await
        })
        .await;
    format!("etcd://127.0.0.1:{port}")
}

/// A single-node etcd for one test (one it may reconfigure, pause or stop); removed
/// when dropped.
pub async fn start_etcd() -> Server {
    Server::start(request(), PORT).await
}
