//! The election cases: the same leader election on every backend, built on the lock
//! or the backend's own.

use std::time::Duration;

use tokio::time::Instant;

use super::{Checked, Harness, NotApplicable};
use crate::{Campaign, ELECTION_KEY_PREFIX, Error, LockExt, OwnerId};

/// Slack for "soon" on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(3);

fn unique_name(case: &str) -> String {
    format!("dlock-conformance-election:{case}:{}", OwnerId::random())
}

/// A campaign that etcd accepts too (whole seconds, at least 2 s): renewed every
/// 600 ms, stepping down 1 s before the lease would run out.
fn options(caps: &crate::Capabilities) -> Campaign {
    let ttl = caps.fit_ttl(Duration::from_secs(3));
    Campaign::ttl(ttl)
        .renew_deadline(ttl - Duration::from_secs(1))
        .retry_period(ttl / 5)
}

/// One leader at a time; everyone reads and observes who leads and what it
/// proclaims; a resignation hands over at once, to a candidate with a larger token;
/// a campaign given up while queued leaves no ghost candidate.
pub async fn election_hands_over_and_everyone_sees_the_leader(h: &dyn Harness) -> Checked {
    let name = unique_name("hand-over");
    let (a, b, c, watcher) = (
        h.client().await.election(&name),
        h.client().await.election(&name),
        h.client().await.election(&name),
        h.client().await.election(&name),
    );
    let caps = h.client().await.capabilities();
    let Ok(a) = a else {
        return Err(NotApplicable("the backend has no election"));
    };
    let (b, c, watcher) = (
        b.expect("election"),
        c.expect("election"),
        watcher.expect("election"),
    );
    let opts = options(&caps);
    assert_eq!(watcher.leader().await.expect("leader"), None);

    let first = a.campaign("a", opts).await.expect("a campaigns");
    assert!(first.is_leader());
    let seen = watcher
        .leader()
        .await
        .expect("leader")
        .expect("nobody leads");
    assert_eq!(
        (seen.value.as_slice(), seen.fence),
        (&b"a"[..], first.fence())
    );
    let mut changes = watcher.observe();
    let change = tokio::time::timeout(SOON, changes.next())
        .await
        .expect("the observer did not report the leader")
        .expect("the stream ended")
        .expect("observe");
    assert_eq!(change.value, b"a");

    // B waits while A leads; C gives up waiting, and must not stand in B's way.
    let second = tokio::spawn(async move { b.campaign("b", opts).await });
    let gave_up = c
        .campaign("c", opts.wait(Duration::from_millis(300)))
        .await
        .expect_err("c was elected while a led");
    assert!(matches!(gave_up, Error::Timeout { .. }), "{gave_up:?}");
    assert!(!second.is_finished(), "b was elected while a led");

    first.proclaim("a, again").await.expect("proclaim");
    let change = tokio::time::timeout(SOON, changes.next())
        .await
        .expect("the observer did not report the proclaimed value")
        .expect("the stream ended")
        .expect("observe");
    assert_eq!(change.value, b"a, again");

    let first_fence = first.fence();
    let resigned = Instant::now();
    first.resign().await.expect("resign");
    let second = tokio::time::timeout(SOON, second)
        .await
        .expect("b was not elected soon after a resigned")
        .expect("task")
        .expect("b campaigns");
    assert!(
        resigned.elapsed() < opts.ttl_value(),
        "b waited out a's TTL: resign did not free the election"
    );
    assert!(second.is_leader());
    assert!(
        second.fence() > first_fence,
        "leaders' tokens must increase"
    );
    let change = tokio::time::timeout(SOON, changes.next())
        .await
        .expect("the observer did not report the new leader")
        .expect("the stream ended")
        .expect("observe");
    assert_eq!(
        (change.value.as_slice(), change.fence),
        (&b"b"[..], second.fence())
    );
    second.resign().await.expect("resign");
    Ok(())
}

/// A leader whose key is deleted behind its back knows it lost before its lease
/// would have run out, stops being leader, cannot proclaim, and the next candidate
/// leads with a larger token.
pub async fn election_deposed_leader_steps_down(h: &dyn Harness) -> Checked {
    let name = unique_name("deposed");
    let lock = h.client().await;
    let caps = lock.capabilities();
    let Ok(a) = lock.election(&name) else {
        return Err(NotApplicable("the backend has no election"));
    };
    if caps.name == "etcd" {
        // etcd's election keys live apart from its locks; dlock-etcd's own tests
        // delete them.
        return Err(NotApplicable(
            "the harness deletes lock keys, not etcd election keys",
        ));
    }
    let b = h.client().await.election(&name).expect("election");
    let opts = options(&caps);
    let leader = a.campaign("a", opts).await.expect("a campaigns");
    let next = tokio::spawn(async move { b.campaign("b", opts).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let deleted = Instant::now();
    h.delete_key(&format!("{ELECTION_KEY_PREFIX}{name}")).await;
    tokio::time::timeout(opts.ttl_value(), leader.lost())
        .await
        .expect("the deposed leader did not notice before its lease would have run out");
    assert!(!leader.is_leader());
    let err = leader
        .proclaim("still here")
        .await
        .expect_err("a deposed leader proclaimed");
    assert!(err.is_lease_lost(), "{err:?}");

    let next = tokio::time::timeout(SOON + opts.ttl_value(), next)
        .await
        .expect("the next candidate was not elected")
        .expect("task")
        .expect("b campaigns");
    assert!(
        next.fence() > leader.fence(),
        "leaders' tokens must increase"
    );
    assert!(deleted.elapsed() < SOON + opts.ttl_value());
    drop(leader);
    next.resign().await.expect("resign");
    Ok(())
}

/// A campaign with a deadline ends at it while another leads; bad options are
/// refused before any I/O.
pub async fn election_campaign_deadline_and_bad_options(h: &dyn Harness) -> Checked {
    let name = unique_name("deadline");
    let lock = h.client().await;
    let caps = lock.capabilities();
    let Ok(a) = lock.election(&name) else {
        return Err(NotApplicable("the backend has no election"));
    };
    let b = h.client().await.election(&name).expect("election");
    let opts = options(&caps);
    let leader = a.campaign("a", opts).await.expect("a campaigns");
    let wait = Duration::from_millis(500);
    let started = Instant::now();
    let err = b
        .campaign("b", opts.wait(wait))
        .await
        .expect_err("b was elected while a led");
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        took >= wait && took < wait + SOON,
        "waited {took:?} for a {wait:?} deadline"
    );
    let bad = b
        .campaign("b", opts.renew_deadline(opts.ttl_value()))
        .await
        .expect_err("renew deadline = TTL");
    assert!(bad.is_invalid_input(), "{bad:?}");
    let bad = b
        .campaign("b", opts.retry_period(opts.renew_deadline_value()))
        .await
        .expect_err("retry period = renew deadline");
    assert!(bad.is_invalid_input(), "{bad:?}");
    assert!(
        lock.election("")
            .expect_err("an empty name")
            .is_invalid_input()
    );
    assert!(
        leader.is_leader(),
        "the refused campaigns disturbed the leader"
    );
    leader.resign().await.expect("resign");
    Ok(())
}
