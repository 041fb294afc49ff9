//! Starting containers: shared ones, reused across the test run, and dedicated ones
//! that a fault test may pause, stop and restart.

use std::{net::TcpListener, time::Duration};

use testcontainers::{
    ContainerAsync, ContainerRequest, GenericImage, ImageExt, ReuseDirective, runners::AsyncRunner,
};

/// The label every test container carries, with the run id as its value, for the
/// cleanup at the end of the run (`docker rm -f $(docker ps -aq --filter label=dlock.test=RUN)`).
pub const LABEL: &str = "dlock.test";

/// A container started for one test; removed when dropped.
pub struct Server {
    container: ContainerAsync<GenericImage>,
    port: u16,
}

impl Server {
    pub(crate) async fn start(
        request: ContainerRequest<GenericImage>,
        internal_port: u16,
    ) -> Server {
        let (container, port) = start_labelled(request, internal_port).await;
        Server { container, port }
    }

    /// A container in the host's network, serving on 127.0.0.1:`port` itself.
    pub(crate) async fn start_on_host(
        request: ContainerRequest<GenericImage>,
        port: u16,
    ) -> Server {
        Server {
            container: start_with_label(request).await,
            port,
        }
    }

    /// The published port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes every process of the server (SIGSTOP through the cgroup freezer).
    pub async fn pause(&self) {
        self.container.pause().await.expect("docker pause");
    }

    /// Thaws a paused server.
    pub async fn unpause(&self) {
        self.container.unpause().await.expect("docker unpause");
    }

    /// Stops the server (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop(&self, grace: Duration) {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        self.container
            .stop_with_timeout(Some(seconds))
            .await
            .expect("docker stop");
    }

    /// Kills the server outright (SIGKILL): no graceful shutdown, so an etcd leader
    /// hands nothing over, as in a crash.
    pub async fn kill(&self) {
        let id = self.container.id().to_owned();
        let status = tokio::process::Command::new("docker")
            .args(["kill", "--signal", "KILL", &id])
            .output()
            .await
            .expect("run docker kill");
        assert!(
            status.status.success(),
            "docker kill failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }

    /// Starts a stopped server again. Keep the published port across this with a
    /// fixed mapping ([`free_port`]); otherwise Docker picks a new one.
    pub async fn start_again(&self) {
        self.container.start().await.expect("docker start");
    }
}

/// Starts (or finds, if another test process already started it) the shared
/// container `name`, and returns its published port.
pub(crate) async fn shared(
    name: &str,
    request: ContainerRequest<GenericImage>,
    internal_port: u16,
) -> u16 {
    // One process starts it; the others wait here and then find it by name.
    let lock_path = std::env::temp_dir().join(format!("{name}.lock"));
    let lock_file = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&lock_path).expect("lock file");
        file.lock().expect("lock the shared container's lock file");
        file
    })
    .await
    .expect("lock task");
    let request = request
        .with_container_name(name)
        .with_reuse(ReuseDirective::Always);
    let (_reused, port) = start_labelled(request, internal_port).await;
    drop(lock_file);
    port
}

/// Starts `request` with the run's label; a failure to start explains what the
/// tests need.
async fn start_with_label(request: ContainerRequest<GenericImage>) -> ContainerAsync<GenericImage> {
    request
        .with_label(LABEL, run_id())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", docker_help(&e.to_string())))
}

/// [`start_with_label`], and the container's published port for `internal_port`.
async fn start_labelled(
    request: ContainerRequest<GenericImage>,
    internal_port: u16,
) -> (ContainerAsync<GenericImage>, u16) {
    let container = start_with_label(request).await;
    let port = container
        .get_host_port_ipv4(internal_port)
        .await
        .unwrap_or_else(|e| panic!("no published port {internal_port}: {e}"));
    (container, port)
}

/// A port free on 127.0.0.1 right now, for a fixed mapping that survives restarts.
/// Picked at random below the kernel's ephemeral range (32768 and up here), from
/// which every outgoing connection of every process takes its local port: a port
/// from there could be taken by one between this check and the server's bind
/// ("port is already allocated", "Address already in use").
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0..10_000u32 {
        let random = RandomState::new().hash_one((std::process::id(), attempt));
        let port = 20_000 + u16::try_from(random % 12_000).unwrap_or_default();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between 20000 and 32000");
}

/// Which test run a shared container belongs to (`DLOCK_TEST_RUN`, else `dev`).
pub(crate) fn run_id() -> String {
    std::env::var("DLOCK_TEST_RUN").unwrap_or_else(|_| "dev".into())
}

/// Splits `name:tag` (the tag defaults to `latest`).
pub(crate) fn image(var: &str, default: &str) -> GenericImage {
    let spec = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let (name, tag) = match spec.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (spec.clone(), "latest".to_owned()),
    };
    GenericImage::new(name, tag)
}

fn docker_help(error: &str) -> String {
    format!(
        "could not start a test container: {error}\n\
         These tests need a running Docker engine and the server images: \
         run them through scripts/test.sh, or run `eval \"$(scripts/setup.sh)\"` \
         first (it picks or builds the images and exports DLOCK_REDIS_IMAGE and \
         DLOCK_ETCD_IMAGE)."
    )
}
