//! A three-node (or N-node) etcd cluster in containers on one user-defined network.

use std::time::Duration;

use testcontainers::{
    ContainerRequest, GenericImage, ImageExt,
    core::{IntoContainerPort, WaitFor},
};

use crate::{container::Server, etcd::etcd_image};

/// Heartbeat and election timeout tuned for a loaded 2-core machine: elections
/// within about a second, without spurious ones when the machine is busy.
pub const HEARTBEAT_MS: u32 = 100;
/// See [`HEARTBEAT_MS`].
pub const ELECTION_TIMEOUT_MS: u32 = 1000;

/// The members of an etcd cluster, each publishing its client port on 127.0.0.1.
pub struct EtcdCluster {
    members: Vec<Server>,
}

impl EtcdCluster {
    /// Starts `n` members together (each waits for the others to form a quorum).
    pub async fn start(n: usize) -> EtcdCluster {
        let tag = short_id();
        let network = format!("dlock-net-{tag}");
        let names: Vec<String> = (0..n).map(|i| format!("dlock-etcd-{tag}-n{i}")).collect();
        let initial = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("n{i}=http://{name}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let starts = names.iter().enumerate().map(|(i, name)| {
            let request = member(i, name, &initial, &tag, &network);
            Server::start(request, 2379)
        });
        // Started together: each member's start waits for the others to form a quorum.
        let members = futures::future::join_all(starts).await;
        EtcdCluster { members }
    }

    /// `etcd://127.0.0.1:p0,127.0.0.1:p1,...`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port()))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// `http://127.0.0.1:<port>` of each member, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.port()))
            .collect()
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Server {
        &self.members[i]
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Which member leads now, asking each reachable member (up to `limit`).
    pub async fn leader(&self, limit: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            for (i, endpoint) in self.endpoints().iter().enumerate() {
                let status = async {
                    let mut client = etcd_client::Client::connect([endpoint.as_str()], None)
                        .await
                        .ok()?;
                    client.status().await.ok()
                };
                if let Ok(Some(status)) =
                    tokio::time::timeout(Duration::from_millis(500), status).await
                    && status.leader() != 0
                    && status
                        .header()
                        .is_some_and(|h| h.member_id() == status.leader())
                {
                    return Some(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

fn member(
    i: usize,
    name: &str,
    initial: &str,
    tag: &str,
    network: &str,
) -> ContainerRequest<GenericImage> {
    let cmd = vec![
        "etcd".to_owned(),
        "--name".into(),
        format!("n{i}"),
        "--data-dir".into(),
        "/tmp/etcd".into(),
        "--listen-client-urls".into(),
        "http://0.0.0.0:2379".into(),
        "--advertise-client-urls".into(),
        format!("http://{name}:2379"),
        "--listen-peer-urls".into(),
        "http://0.0.0.0:2380".into(),
        "--initial-advertise-peer-urls".into(),
        format!("http://{name}:2380"),
        "--initial-cluster".into(),
        initial.to_owned(),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        tag.to_owned(),
        "--heartbeat-interval".into(),
        HEARTBEAT_MS.to_string(),
        "--election-timeout".into(),
        ELECTION_TIMEOUT_MS.to_string(),
    ];
    etcd_image()
        .with_exposed_port(2379.tcp())
        .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
        .with_network(network)
        .with_container_name(name)
        .with_cmd(cmd)
}

/// A short random id for container and network names.
fn short_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos)
}
