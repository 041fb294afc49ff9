//! Leader election with fencing: three candidates, the leader freezes, another
//! takes over, and the old leader's late write is refused.
//!
//! ```text
//! cargo run --example leader                                      # in-process
//! cargo run --example leader --features redis -- redis://127.0.0.1:6379
//! cargo run --example leader --features etcd -- etcd://127.0.0.1:2379
//! cargo run --example leader --features redlock -- \
//!     redlock://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
//! ```
//!
//! Three candidates, each with its own client, campaign for `scheduler`; an
//! observer prints every change of leader. Each leader writes ticks to a schedule
//! through the fence gate, with its leadership's token.
//!
//! The first leader freezes after three ticks, as a process stopped by SIGSTOP or
//! a long GC pause would: nothing renews its leadership, so once its TTL runs out
//! the next candidate is elected. The frozen leader wakes much later and, without
//! checking whether it still leads, writes with the token it had. The gate refuses
//! it: later leaders wrote with larger tokens. The other leaders write three ticks
//! each and resign, which hands over at once.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use dlock::{Admission, Campaign, DynFenceGate, FenceToken, LockExt, OwnerId};

/// What one candidate did while it led.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Term {
    pub(crate) candidate: u32,
    /// Its place in the order of leaders: 0 for the first.
    pub(crate) order: usize,
    pub(crate) fence: FenceToken,
    /// Its writes' admissions, in order.
    pub(crate) writes: Vec<Admission>,
}

/// The schedule's resource, fresh per run: a gate on a server remembers old runs.
pub(crate) fn names() -> (String, String) {
    let run = OwnerId::random();
    (format!("scheduler:{run}"), format!("schedule:{run}"))
}

async fn candidate(
    n: u32,
    url: String,
    election: String,
    schedule: String,
    terms: Arc<AtomicUsize>,
    resource_gate: Option<DynFenceGate>,
) -> Result<Term, dlock::Error> {
    // A client per candidate, as separate app instances would have.
    let (lock, gate) = dlock::connect_with_gate(&url).await?;
    let gate = resource_gate.unwrap_or(gate);
    let options = campaign_options(&lock.capabilities());
    let leadership = lock
        .election(&election)?
        .campaign(format!("candidate-{n}"), options)
        .await?;
    let order = terms.fetch_add(1, Ordering::SeqCst);
    let fence = leadership.fence();
    println!("[candidate {n}] elected, token {fence}");
    let mut writes = Vec::new();
    for tick in 1..=3 {
        writes.push(
            write(
                &gate,
                &schedule,
                fence,
                format!("tick {tick} by candidate {n}"),
            )
            .await?,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if order == 0 {
        println!("[candidate {n}] freezes (no renewals from here on)");
        leadership.leave_to_expire();
        tokio::time::sleep(options.ttl_value() * 3).await;
        println!("[candidate {n}] wakes up and writes, still believing it leads");
        writes.push(
            write(
                &gate,
                &schedule,
                fence,
                format!("late write by candidate {n}"),
            )
            .await?,
        );
    } else {
        println!("[candidate {n}] resigns");
        leadership.resign().await?;
    }
    Ok(Term {
        candidate: n,
        order,
        fence,
        writes,
    })
}

async fn write(
    gate: &DynFenceGate,
    schedule: &str,
    fence: FenceToken,
    what: String,
) -> Result<Admission, dlock::Error> {
    let admission = gate.write(schedule, fence, what.as_bytes()).await?;
    match admission {
        Admission::Accepted => println!("    ✓ {what} (token {fence})"),
        Admission::Stale { highest } => {
            println!("    ✗ {what} refused: token {fence} is stale, the gate has seen {highest}")
        }
    }
    Ok(admission)
}

/// A 2 s lease (etcd's shortest), renewed every 400 ms, stepping down 700 ms
/// before it would run out.
pub(crate) fn campaign_options(caps: &dlock::Capabilities) -> Campaign {
    let ttl = caps.fit_ttl(Duration::from_secs(2));
    Campaign::ttl(ttl)
        .renew_deadline(ttl.mul_f64(0.65))
        .retry_period(ttl / 5)
}

/// Runs the three candidates and an observer; returns the terms in the order the
/// candidates led, and the leaders the observer saw.
pub(crate) async fn run(url: &str) -> Result<(Vec<Term>, Vec<String>), dlock::Error> {
    let (election, schedule) = names();
    let observer_lock = dlock::connect(url).await?;
    let mut changes = observer_lock.election(&election)?.observe();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while let Some(change) = changes.next().await {
                match change {
                    Ok(leader) => {
                        let value = String::from_utf8_lossy(&leader.value).into_owned();
                        println!("[observer] leader: {value} (token {})", leader.fence);
                        seen.lock().unwrap_or_else(|p| p.into_inner()).push(value);
                    }
                    Err(error) => println!("[observer] could not read the leader: {error}"),
                }
            }
        }
    });
    let terms = Arc::new(AtomicUsize::new(0));
    // Redlock keeps no gate of its own: the gate lives with the resource, here in
    // this process.
    let resource_gate = (observer_lock.capabilities().name == "redlock")
        .then(|| Arc::new(dlock::MemoryFenceGate::new()) as DynFenceGate);
    let candidates: Vec<_> = (1..=3)
        .map(|n| {
            let (url, election, schedule, terms, gate) = (
                url.to_owned(),
                election.clone(),
                schedule.clone(),
                Arc::clone(&terms),
                resource_gate.clone(),
            );
            tokio::spawn(async move {
                // Candidate 1 campaigns first, so it is the one that freezes.
                tokio::time::sleep(Duration::from_millis(100) * (n - 1)).await;
                candidate(n, url, election, schedule, terms, gate).await
            })
        })
        .collect();
    let mut done = Vec::new();
    for c in candidates {
        done.push(c.await.expect("candidate panicked")?);
    }
    // Let the observer catch the last change before stopping it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    observer.abort();
    done.sort_by_key(|t| t.order);
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((done, seen))
}

/// Checks the outcome: tokens grow with each leader, every write while leading was
/// accepted, and the frozen leader's late write was refused.
pub(crate) fn check(terms: &[Term]) -> Result<(), String> {
    if terms.len() != 3 || !terms.windows(2).all(|w| w[0].fence < w[1].fence) {
        return Err(format!("leaders' tokens did not grow: {terms:?}"));
    }
    let accepted = |t: &Term, n| t.writes[..n].iter().all(|a| a.is_accepted());
    let first = &terms[0];
    if first.writes.len() != 4 || !accepted(first, 3) || first.writes[3].is_accepted() {
        return Err(format!("the frozen leader's writes: {first:?}"));
    }
    if terms[1..]
        .iter()
        .any(|t| t.writes.len() != 3 || !accepted(t, 3))
    {
        return Err(format!("a leader's write was refused: {terms:?}"));
    }
    Ok(())
}

#[allow(dead_code)] // tests include this file as a module and call `run`
#[tokio::main]
async fn main() -> Result<std::process::ExitCode, dlock::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://leader-demo".into());
    let (terms, _) = run(&url).await?;
    println!();
    for t in &terms {
        println!(
            "leader #{}: candidate {} with token {}",
            t.order + 1,
            t.candidate,
            t.fence
        );
    }
    Ok(match check(&terms) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(wrong) => {
            eprintln!("WRONG: {wrong}");
            std::process::ExitCode::FAILURE
        }
    })
}
