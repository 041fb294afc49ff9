//! The etcd backend against raw etcd-client requests.

use std::{sync::Arc, time::Duration};

use dlock::{DynLock, EtcdLock};
use etcd_client::{Client, Compare, CompareOp, LockOptions, PutOptions, Txn, TxnOp};

use crate::measure::*;

/// The floors: etcd's own Lock RPC on one shared lease plus Unlock (two raft
/// commits), and a lease per lock: grant, a create-if-absent transaction, revoke
/// (three commits, as dlock-etcd's acquire and release).
struct Floor {
    client: Client,
    shared_lease: i64,
}

impl Floor {
    async fn lock_unlock(&self, name: &str) {
        let mut c = self.client.clone();
        let locked = c
            .lock(name, Some(LockOptions::new().with_lease(self.shared_lease)))
            .await
            .expect("Lock");
        c.unlock(locked.key()).await.expect("Unlock");
    }

    async fn grant_txn_revoke(&self, key: &str) {
        let mut c = self.client.clone();
        let lease = c.lease_grant(30, None).await.expect("grant").id();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                "",
                Some(PutOptions::new().with_lease(lease)),
            )]);
        assert!(
            c.txn(txn).await.expect("txn").succeeded(),
            "floor key {key} was held"
        );
        c.lease_revoke(lease).await.expect("revoke");
    }

    /// One raft commit: the unit of the handoff target.
    async fn write(&self, key: &str) {
        self.client.clone().put(key, "v", None).await.expect("put");
    }
}

pub(crate) async fn report(config: &Config, url: Option<String>) {
    let _server;
    let url = match url {
        Some(url) => url,
        None => {
            let server = dlock_testkit::start_etcd().await;
            let url = format!("etcd://127.0.0.1:{}", server.port());
            _server = server;
            url
        }
    };
    let lock: DynLock = Arc::new(EtcdLock::connect(&url).await.expect("connect"));
    // Session mode: every lock on one lease of the bench's TTL.
    let session_url = format!("{url}/?session={}", TTL.as_secs());
    let session: DynLock = Arc::new(EtcdLock::connect(&session_url).await.expect("connect"));
    let mut client = Client::connect([url.replace("etcd://", "http://")], None)
        .await
        .expect("connect");
    let shared_lease = client.lease_grant(600, None).await.expect("grant").id();
    let floor = Arc::new(Floor {
        client,
        shared_lease,
    });
    let n = config.iterations / 100;
    out!("dlock bench harness — backend: etcd ({url}), 2 worker threads\n");

    let (mut lock_unlock, mut per_lock, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    let mut ours_session = Vec::new();
    for _ in 0..config.rounds {
        lock_unlock.push(rate(n, || floor.lock_unlock("bench/raw-lock")).await);
        per_lock.push(rate(n, || floor.grant_txn_revoke("bench/raw-lease")).await);
        ours.push(rate(n, || acquire_release(&lock, "bench:uncontended")).await);
        ours_session.push(rate(n, || acquire_release(&session, "bench:session")).await);
    }
    let lock_unlock = median(&mut lock_unlock);
    let per_lock = median(&mut per_lock);
    let ours = median(&mut ours);
    let ours_session = median(&mut ours_session);
    let write_lat = latencies(n, || floor.write("bench/raw-write")).await;
    let per_lock_lat = latencies(n, || floor.grant_txn_revoke("bench/raw-lease-lat")).await;
    let ours_lat = latencies(n, || acquire_release(&lock, "bench:lat")).await;
    let session_lat = latencies(n, || acquire_release(&session, "bench:session-lat")).await;

    header();
    row("floor: one write (put)", 0.0, Some(&write_lat), None);
    row(
        "floor 1: Lock RPC (shared lease) + Unlock",
        lock_unlock,
        None,
        None,
    );
    row(
        "floor 2: lease grant + txn + revoke",
        per_lock,
        Some(&per_lock_lat),
        None,
    );
    row(
        "uncontended acquire+release (lease per lock)",
        ours,
        Some(&ours_lat),
        Some(ours / per_lock),
    );
    out!("{:<44} vs floor 1: {:.2}x", "", ours / lock_unlock);
    row(
        "uncontended acquire+release (session mode)",
        ours_session,
        Some(&session_lat),
        Some(ours_session / lock_unlock),
    );
    out!("{:<44} (ratio: vs floor 1, the Lock RPC)", "");

    distinct_keys(&lock, config.window, config.rounds, "floor 2", {
        let floor = floor.clone();
        move |task| {
            let floor = floor.clone();
            async move {
                floor
                    .grant_txn_revoke(&format!("bench/raw-lease/{task}"))
                    .await
            }
        }
    })
    .await;

    for (mode_lock, mode, uncontended) in [
        (&lock, "", ours),
        (&session, ", session mode", ours_session),
    ] {
        let one_key = contended(mode_lock, 8, config.window * 2).await;
        row(
            &format!("8 tasks, one key (FIFO){mode}"),
            one_key.rate,
            Some(&one_key.waits),
            Some(one_key.rate / uncontended),
        );
        out!("{:<44} {}", "  fairness", one_key.fairness());
    }
    for (mode_lock, heading) in [(&lock, None), (&session, Some("session mode:"))] {
        if let Some(heading) = heading {
            out!("{heading}");
        }
        report_handoff(
            mode_lock,
            100,
            Duration::from_millis(50),
            "write",
            &write_lat,
            || floor.write("bench/raw-write"),
        )
        .await;
    }
    scaling("etcd", "clients", &[1, 8, 64, 256], config.window, || {
        let url = url.clone();
        async move { Arc::new(EtcdLock::connect(&url).await.expect("connect")) as DynLock }
    })
    .await;
    out!(
        "\ntargets: lease per lock >= 0.9x floor 2; session mode >= 0.95x floor 1; handoff p50 <= 2x one write."
    );
}
