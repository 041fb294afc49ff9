//! The conformance suite: the contract of [`Lock`](crate::Lock), checked case by case
//! against a real backend.
//!
//! A backend crate's test file names a harness, and the macro expands one
//! `#[tokio::test]` per case, so a failure names its case:
//!
//! ```ignore
//! dlock_core::conformance_tests!(my_backend_tests::harness().await);
//! ```
//!
//! Each case reads [`Capabilities`](crate::Capabilities) to decide whether it applies
//! and how long to wait (etcd's TTLs are whole seconds, memory's are not), and uses
//! its own random keys, so cases can share one server.

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::FutureExt;

use crate::DynLock;

pub mod cases;
pub mod elections;
pub mod gate;

/// What the suite needs from a backend under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new client of the backend: its own connection and, where the backend has
    /// one, its own session. Dropping it is how a case abandons a whole client.
    async fn client(&self) -> DynLock;

    /// Removes the lock on `key` on the server, behind its holder's back, as an
    /// operator or a server that lost its data would.
    async fn delete_key(&self, key: &str);
}

/// A case's result when it does not apply to this backend.
#[derive(Debug)]
pub struct NotApplicable(pub &'static str);

/// What a case returns: `Ok` when it ran and passed (failures panic).
pub type Checked = Result<(), NotApplicable>;

/// A case as a value: its name and how to run it.
pub type Case = (
    &'static str,
    for<'a> fn(&'a dyn Harness) -> Pin<Box<dyn Future<Output = Checked> + Send + 'a>>,
);

/// The longest a case may run before it counts as hung.
pub const CASE_LIMIT: Duration = Duration::from_secs(120);

/// Runs one case and panics with its name if it fails or hangs; prints a note when
/// it does not apply.
pub async fn run<'a, F>(name: &str, case: fn(&'a dyn Harness) -> F, harness: &'a dyn Harness)
where
    F: Future<Output = Checked> + 'a,
{
    match tokio::time::timeout(CASE_LIMIT, case(harness)).await {
        Ok(Ok(())) => {}
        Ok(Err(NotApplicable(why))) => eprintln!("{name}: not applicable: {why}"),
        Err(_) => panic!("{name}: hung for more than {CASE_LIMIT:?}"),
    }
}

/// Runs every case against `harness` and returns the names of those that failed
/// (panicked or hung). For checking that the suite catches a broken backend.
pub async fn failing_cases(harness: Arc<dyn Harness>) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for (name, case) in all_cases() {
        let run =
            AssertUnwindSafe(tokio::time::timeout(CASE_LIMIT, case(&*harness))).catch_unwind();
        match run.await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => failed.push(name),
        }
    }
    failed
}

/// Defines `all_cases`; an implementation detail.
#[doc(hidden)]
#[macro_export]
macro_rules! __dlock_case_list {
    ($($case:ident),* $(,)?) => {
        /// Every case, by name.
        pub fn all_cases() -> Vec<Case> {
            vec![$((stringify!($case), |h| Box::pin(cases::$case(h))),)*]
        }
    };
}
crate::for_each_conformance_case!(__dlock_case_list);

/// Calls `$callback!(case, case, ...)` with every case's name: the one list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_conformance_case {
    ($callback:ident $(, $args:tt)*) => {
        $crate::$callback!($($args,)*
            try_acquire_on_free_key_succeeds,
            try_acquire_on_held_key_is_none,
            acquire_is_not_reentrant,
            mutual_exclusion_under_contention,
            release_frees_the_key,
            waiter_wakes_on_release,
            abandoned_lease_expires_after_ttl,
            queued_waiters_take_over_expired_holders,
            stale_release_is_lease_lost,
            stale_extend_is_lease_lost,
            fence_tokens_increase,
            fence_tokens_increase_across_client_restart,
            fence_tokens_follow_lock_order,
            valid_until_is_within_ttl,
            extend_pushes_valid_until,
            keep_alive_holds_past_ttl,
            lost_fires_when_key_is_deleted,
            lost_fires_at_valid_until_without_keep_alive,
            old_holder_drop_leaves_new_holder,
            cancelled_wait_leaves_nothing_behind,
            acquire_dropped_at_any_poll_leaves_key_free,
            dropped_lease_is_released_in_background,
            acquire_deadline_is_honoured,
            try_acquire_does_not_wait,
            bad_input_is_refused,
            keys_do_not_collide,
            with_lock_returns_and_releases,
            with_lock_cancels_work_when_lost,
            fifo_waiters_are_served_in_order,
            abandoned_waiter_does_not_block_the_line,
            shutdown_frees_leases_and_ends_waiters,
            inspect_shows_the_holder_without_taking_it,
            election_hands_over_and_everyone_sees_the_leader,
            election_deposed_leader_steps_down,
            election_campaign_deadline_and_bad_options,
        );
    };
}

/// Expands into one `#[tokio::test]` per conformance case, each running against the
/// harness that `$harness` (an expression, evaluated inside each test) gives.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::for_each_conformance_case!(__dlock_conformance_test, { $harness });
    };
}

/// One test per case; an implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __dlock_conformance_test {
    ($harness:tt, $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::conformance::run(
                    stringify!($case),
                    $crate::conformance::cases::$case,
                    &harness,
                )
                .await;
            }
        )*
    };
}
