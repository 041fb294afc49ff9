//! The fence gate's contract, checked case by case against a real gate: the same
//! safe operations on every backend. A backend crate's test file expands one test
//! per case:
//!
//! ```ignore
//! dlock_core::gate_conformance_tests!(my_gate().await);
//! ```
//!
//! Each case uses its own random resource names, so cases can share one server.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{Admission, DynFenceGate, FenceGateExt, FenceToken, FencedRead, OwnerId};

fn resource(case: &str) -> String {
    format!("dlock-gate-conformance:{case}:{}", OwnerId::random())
}

/// Writes with lower tokens are refused; equal and higher ones are admitted.
pub async fn gate_refuses_older_tokens(gate: DynFenceGate) {
    let r = resource("older");
    let write = |t: u64, v: &'static str| {
        let (gate, r) = (gate.clone(), r.clone());
        async move {
            gate.write(&r, FenceToken(t), v.as_bytes())
                .await
                .expect("write")
        }
    };
    assert_eq!(write(5, "five").await, Admission::Accepted);
    assert_eq!(
        write(4, "four").await,
        Admission::Stale {
            highest: FenceToken(5)
        }
    );
    assert_eq!(write(5, "five again").await, Admission::Accepted);
    assert_eq!(write(7, "seven").await, Admission::Accepted);
    let read = gate.read(&r).await.expect("read");
    assert_eq!(read, Some((FenceToken(7), b"seven".to_vec())));
    assert_eq!(gate.read(&resource("never")).await.expect("read"), None);
}

/// The interleaving that loses an update when only writes are fenced: A (token 5)
/// reads and stalls, B (token 6) reads; A's write must be refused, B's admitted.
pub async fn gate_read_for_update_stops_the_lost_update(gate: DynFenceGate) {
    let r = resource("rmw");
    assert!(
        gate.write(&r, FenceToken(4), b"100")
            .await
            .expect("write")
            .is_accepted()
    );
    let a = gate
        .read_for_update(&r, FenceToken(5))
        .await
        .expect("A reads");
    assert_eq!(a, FencedRead::Current(Some(b"100".to_vec())));
    let b = gate
        .read_for_update(&r, FenceToken(6))
        .await
        .expect("B reads");
    assert_eq!(b, FencedRead::Current(Some(b"100".to_vec())));
    assert_eq!(
        gate.write(&r, FenceToken(5), b"90")
            .await
            .expect("A writes"),
        Admission::Stale {
            highest: FenceToken(6)
        },
        "the stalled holder's write, based on a read a newer holder has superseded, was admitted"
    );
    assert!(
        gate.write(&r, FenceToken(6), b"90")
            .await
            .expect("B writes")
            .is_accepted()
    );
    // A stale read is refused too, and changes nothing.
    assert_eq!(
        gate.read_for_update(&r, FenceToken(5)).await.expect("read"),
        FencedRead::Stale {
            highest: FenceToken(6)
        }
    );
    assert_eq!(
        gate.read(&r).await.expect("read"),
        Some((FenceToken(6), b"90".to_vec()))
    );
}

/// A read for update of a resource never written raises its token all the same.
pub async fn gate_read_for_update_of_a_new_resource_fences_it(gate: DynFenceGate) {
    let r = resource("new");
    assert_eq!(
        gate.read_for_update(&r, FenceToken(3)).await.expect("read"),
        FencedRead::Current(None)
    );
    assert_eq!(
        gate.write(&r, FenceToken(2), b"x").await.expect("write"),
        Admission::Stale {
            highest: FenceToken(3)
        }
    );
    assert_eq!(gate.read(&r).await.expect("read"), None);
}

/// Tokens compare as numbers across the whole u64 range, and resources with
/// separator-like names stay apart.
pub async fn gate_compares_every_u64_and_keeps_resources_apart(gate: DynFenceGate) {
    let base = resource("range");
    let r = format!("{base}/a");
    for t in [
        9,
        10,
        99,
        100,
        u64::from(u32::MAX),
        1 << 53,
        (1 << 53) + 1,
        u64::MAX - 1,
        u64::MAX,
    ] {
        assert!(
            gate.write(&r, FenceToken(t), b"v")
                .await
                .expect("write")
                .is_accepted(),
            "token {t} refused after a smaller one"
        );
    }
    assert!(
        !gate
            .write(&r, FenceToken(u64::MAX - 1), b"v")
            .await
            .expect("write")
            .is_accepted()
    );
    for name in [
        format!("{base}/a%2F"),
        format!("{base}%2Fa"),
        format!("{base}/a/"),
    ] {
        assert!(
            gate.write(&name, FenceToken(1), b"other")
                .await
                .expect("write")
                .is_accepted(),
            "{name} shares a register with {r}"
        );
    }
}

/// Many holders updating one register through `update`, each with a token newer
/// than all before it (as successive leases are), interleaving their reads and
/// writes: every admitted update counts, none is lost.
pub async fn gate_updates_lose_nothing_under_interleaving(gate: DynFenceGate) {
    let r = resource("counter");
    let tokens = Arc::new(AtomicU64::new(1));
    let admitted = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (gate, r, tokens, admitted) =
                (gate.clone(), r.clone(), tokens.clone(), admitted.clone());
            tokio::spawn(async move {
                for i in 0..25u64 {
                    let token = FenceToken(tokens.fetch_add(1, Ordering::SeqCst));
                    let FencedRead::Current(value) =
                        gate.read_for_update(&r, token).await.expect("read")
                    else {
                        continue;
                    };
                    let n: u64 = value.map_or(0, |v| {
                        String::from_utf8_lossy(&v).parse().expect("a number")
                    });
                    // Stall between the read and the write, as a paused holder does.
                    tokio::time::sleep(Duration::from_micros((w * 37 + i * 11) % 500)).await;
                    let written = gate
                        .write(&r, token, (n + 1).to_string().as_bytes())
                        .await
                        .expect("write");
                    if written.is_accepted() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker panicked");
    }
    let admitted = admitted.load(Ordering::SeqCst) as u64;
    assert!(admitted > 0, "no update was admitted");
    let (_, value) = gate.read(&r).await.expect("read").expect("written");
    let total: u64 = String::from_utf8_lossy(&value).parse().expect("a number");
    assert_eq!(
        total,
        admitted,
        "{} admitted updates lost",
        admitted - total
    );
    // The same through the convenience, with a lease-like token.
    let next = FenceToken(tokens.fetch_add(1, Ordering::SeqCst));
    let done = gate
        .update(&r, next, |v| {
            let n: u64 = v.map_or(0, |v| String::from_utf8_lossy(v).parse().unwrap_or(0));
            (n + 1).to_string().into_bytes()
        })
        .await
        .expect("update");
    assert!(done.is_accepted());
}

/// Calls `$callback!(case, ...)` with every gate case: the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_gate_case {
    ($callback:ident $(, $args:tt)*) => {
        $crate::$callback!($($args,)*
            gate_refuses_older_tokens,
            gate_read_for_update_stops_the_lost_update,
            gate_read_for_update_of_a_new_resource_fences_it,
            gate_compares_every_u64_and_keeps_resources_apart,
            gate_updates_lose_nothing_under_interleaving,
        );
    };
}

/// Expands into one `#[tokio::test]` per gate case, each running against the gate
/// (a [`DynFenceGate`]) that `$gate`, evaluated inside each test, gives.
#[macro_export]
macro_rules! gate_conformance_tests {
    ($gate:expr) => {
        $crate::for_each_gate_case!(__dlock_gate_test, { $gate });
    };
}

/// One test per gate case; an implementation detail of [`gate_conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __dlock_gate_test {
    ($gate:tt, $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let gate: $crate::DynFenceGate = $gate;
                $crate::conformance::gate::$case(gate).await;
            }
        )*
    };
}
