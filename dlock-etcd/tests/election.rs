//! Leader election on a real etcd: campaign, observe, resign, and losing leadership.

use std::time::Duration;

use dlock_core::{Campaign, OwnerId};
use dlock_etcd::{EtcdElection, EtcdLock};
use dlock_testkit::shared_etcd_url;

fn name(case: &str) -> String {
    format!("dlock-election:{case}:{}", OwnerId::random())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_lead_in_turn_and_everyone_sees_who_leads() {
    let url = shared_etcd_url().await;
    let election_name = name("turns");
    let a = EtcdElection::new(
        &EtcdLock::connect(&url).await.expect("connect"),
        &election_name,
    )
    .expect("name");
    let b = EtcdElection::new(
        &EtcdLock::connect(&url).await.expect("connect"),
        &election_name,
    )
    .expect("name");
    let watcher = EtcdElection::new(
        &EtcdLock::connect(&url).await.expect("connect"),
        &election_name,
    )
    .expect("name");
    let ttl = Campaign::ttl(Duration::from_secs(5));

    assert_eq!(watcher.leader().await.expect("leader"), None);
    let first = a.campaign("a", ttl).await.expect("a campaigns");
    assert!(first.is_leader());
    assert_eq!(
        watcher
            .leader()
            .await
            .expect("leader")
            .map(|l| l.value)
            .as_deref(),
        Some(b"a".as_slice())
    );
    let mut changes = watcher.observe().await.expect("observe");
    assert_eq!(
        changes.next().await.expect("a change").expect("ok").value,
        b"a"
    );

    // B waits while A leads.
    let second = tokio::spawn(async move { b.campaign("b", ttl).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "b was elected while a led");

    first.proclaim("a, again").await.expect("proclaim");
    assert_eq!(
        changes.next().await.expect("a change").expect("ok").value,
        b"a, again"
    );
    let first_fence = first.fence();
    first.resign().await.expect("resign");

    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("b was not elected after a resigned")
        .expect("task")
        .expect("b campaigns");
    assert!(second.is_leader());
    assert!(
        second.fence() > first_fence,
        "leaders' tokens must increase"
    );
    assert_eq!(
        changes.next().await.expect("a change").expect("ok").value,
        b"b"
    );
    assert_eq!(
        watcher
            .leader()
            .await
            .expect("leader")
            .map(|l| l.value)
            .as_deref(),
        Some(b"b".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_knows_it_lost() {
    let url = shared_etcd_url().await;
    let election_name = name("lost");
    let locks = EtcdLock::connect(&url).await.expect("connect");
    let election = EtcdElection::new(&locks, &election_name).expect("name");
    let ttl = Campaign::ttl(Duration::from_secs(3));
    let leadership = election.campaign("a", ttl).await.expect("campaign");

    // An operator deletes every key of the election (the leader's among them).
    let mut raw = etcd_client::Client::connect([url.replace("etcd://", "http://")], None)
        .await
        .expect("connect");
    let deleted = raw
        .delete(
            format!("dlock/v2/election/{election_name}"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("delete");
    assert!(
        deleted.deleted() > 0,
        "the election keys were not where expected"
    );
    tokio::time::timeout(ttl.ttl_value() * 2, leadership.lost())
        .await
        .expect("the leader did not notice it lost");
    assert!(!leadership.is_leader());
    let err = leadership
        .proclaim("still here")
        .await
        .expect_err("a deposed leader proclaimed");
    assert!(err.is_lease_lost(), "{err:?}");
    let err = leadership
        .resign()
        .await
        .expect_err("a deposed leader resigned as if it led");
    assert!(err.is_lease_lost(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_election_input_is_refused() {
    let url = shared_etcd_url().await;
    let locks = EtcdLock::connect(&url).await.expect("connect");
    assert!(
        EtcdElection::new(&locks, "")
            .expect_err("empty name")
            .is_invalid_input()
    );
    let election = EtcdElection::new(&locks, &name("ttl")).expect("name");
    let err = election
        .campaign("a", Campaign::ttl(Duration::from_secs(1)))
        .await
        .expect_err("1 s TTL");
    assert!(err.is_invalid_input(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_campaign_leaves_no_ghost_candidate() {
    let url = shared_etcd_url().await;
    let election_name = name("ghost");
    let connect = || async { EtcdLock::connect(&url).await.expect("connect") };
    let a = EtcdElection::new(&connect().await, &election_name).expect("name");
    let b = EtcdElection::new(&connect().await, &election_name).expect("name");
    let c = EtcdElection::new(&connect().await, &election_name).expect("name");
    let ttl = Campaign::ttl(Duration::from_secs(5));
    let leader = a.campaign("a", ttl).await.expect("a campaigns");
    // B gives up waiting: its campaign future is dropped while queued.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), b.campaign("b", ttl)).await;
    assert!(gave_up.is_err(), "b was elected while a led");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(async move { c.campaign("c", ttl).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    leader.resign().await.expect("resign");
    // C is next: B's abandoned candidacy was withdrawn, not left to win and lead nobody.
    let elected = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("c was not elected: a ghost candidate stood in its way")
        .expect("task")
        .expect("c campaigns");
    assert!(elected.is_leader());
    assert_eq!(
        a.leader()
            .await
            .expect("leader")
            .map(|l| l.value)
            .as_deref(),
        Some(b"c".as_slice())
    );
}

/// A campaign and an observer wait as long as their callers want: longer than the
/// client's operation timeout (2 s here), which bounds ordinary requests only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_and_an_observer_wait_longer_than_the_operation_timeout() {
    let url = shared_etcd_url().await;
    let election_name = name("long-wait");
    let client = || async {
        let config = dlock_etcd::EtcdConfig::builder()
            .endpoint(url.replace("etcd://", "http://"))
            .operation_timeout(Duration::from_secs(2))
            .build()
            .expect("config");
        EtcdLock::connect_with(config).await.expect("connect")
    };
    let a = EtcdElection::new(&client().await, &election_name).expect("name");
    let b = EtcdElection::new(&client().await, &election_name).expect("name");
    let watcher = EtcdElection::new(&client().await, &election_name).expect("name");
    let ttl = Campaign::ttl(Duration::from_secs(5));

    // Nobody leads for 3 s: the observer waits for the first leader.
    let mut changes = watcher.observe().await.expect("observe");
    let observed = tokio::spawn(async move { changes.next().await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !observed.is_finished(),
        "the observer gave up: {:?}",
        observed.await
    );
    let first = a.campaign("a", ttl).await.expect("a campaigns");
    let seen = tokio::time::timeout(Duration::from_secs(5), observed)
        .await
        .expect("the observer did not see the leader")
        .expect("task");
    assert_eq!(seen.expect("a change").expect("ok").value, b"a");

    // B waits 3 s behind A, then leads once A resigns.
    let second = tokio::spawn(async move { b.campaign("b", ttl).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !second.is_finished(),
        "b's campaign ended while a led: {:?}",
        second.await
    );
    first.resign().await.expect("resign");
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("b was not elected after a resigned")
        .expect("task")
        .expect("b's campaign failed");
    assert!(second.is_leader());
    second.resign().await.expect("resign");
}
