//! The checks at the end of a run, over the whole history.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Event, Outcome, Register, What};

/// One acquisition, assembled from its events.
#[derive(Clone, Debug, Default)]
struct Acquisition {
    invoke: u64,
    ttl_ns: u64,
    ok: Option<(u64, u64)>,
    unknown: bool,
    enter: Option<u64>,
    exit: Option<u64>,
    release_invoke: Option<u64>,
}

/// What the checker measured in one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Acquisitions started.
    pub acquisitions: usize,
    /// Granted.
    pub granted: usize,
    /// Outcome unknown (timed out, connection lost).
    pub unknown: usize,
    /// Pairs of critical sections of different acquisitions that overlapped, for
    /// whatever reason (a holder paused past its TTL overlaps the next one: that is
    /// what fencing is for).
    pub overlaps: usize,
    /// The longest such overlap, in ms.
    pub longest_overlap_ms: f64,
    /// Grants the mutex model forbids: B granted entirely while A surely still held
    /// the lock on the server (after A's grant, before A's release was sent, and
    /// before A's invoke + TTL). A lock bug, or a server that lost its data.
    pub mutex_violations: usize,
    /// Token pairs out of real-time order (X granted before Y started, yet
    /// fence(X) >= fence(Y)), and tokens granted twice.
    pub fence_violations: usize,
    /// Reads and writes the gate refused as stale.
    pub stale_rejected: usize,
    /// Writes stored to the plain register, minus its final count: updates lost.
    pub lost_plain: i64,
    /// The same through the fence gate: must be 0.
    pub lost_fenced: i64,
    /// Writes stored to each register.
    pub stored_plain: u64,
    /// See `stored_plain`.
    pub stored_fenced: u64,
    /// Critical sections longer than their lease's TTL: a holder outlived its lease
    /// (paused, or slowed by the fault).
    pub outlived_leases: usize,
    /// Acquisitions and writes that failed or ended unknown while a fault was on.
    pub failures_during_faults: usize,
    /// The longest time within a fault with no grant at all, in ms: a fault that
    /// stops progress while waiters wait through it (rather than fail) shows here.
    pub longest_stall_ms: f64,
    /// From each fault's end to the next grant, in ms (the longest).
    pub recovery_ms: Option<f64>,
    /// What the orchestrator observed the faults do.
    pub observed: Vec<String>,
}

/// Checks `history`; `final_plain` and `final_fenced` are the registers' values at
/// the end (each update adds one).
pub fn check(history: &[Event], final_plain: u64, final_fenced: u64) -> Report {
    let mut events: Vec<&Event> = history.iter().collect();
    events.sort_by_key(|e| e.t);
    let mut acqs: BTreeMap<(u32, u64), Acquisition> = BTreeMap::new();
    let mut report = Report::default();
    let mut faults: Vec<(u64, Option<u64>)> = Vec::new();
    let mut failure_times = Vec::new();
    for e in &events {
        let id = |acq: &u64| (e.worker, *acq);
        match &e.what {
            What::AcquireInvoke { acq, ttl_ms } => {
                acqs.insert(
                    id(acq),
                    Acquisition {
                        invoke: e.t,
                        ttl_ns: ttl_ms * 1_000_000,
                        ..Acquisition::default()
                    },
                );
            }
            What::AcquireOk { acq, fence } => {
                if let Some(a) = acqs.get_mut(&id(acq)) {
                    a.ok = Some((e.t, *fence));
                }
            }
            What::AcquireUnknown { acq, .. } => {
                if let Some(a) = acqs.get_mut(&id(acq)) {
                    a.unknown = true;
                }
                failure_times.push(e.t);
            }
            What::AcquireFail { .. } => failure_times.push(e.t),
            What::Enter { acq } => {
                if let Some(a) = acqs.get_mut(&id(acq)) {
                    a.enter = Some(e.t);
                }
            }
            What::Exit { acq } => {
                if let Some(a) = acqs.get_mut(&id(acq)) {
                    a.exit = Some(e.t);
                }
            }
            What::ReleaseInvoke { acq } => {
                if let Some(a) = acqs.get_mut(&id(acq)) {
                    a.release_invoke = Some(e.t);
                }
            }
            What::Read { stale: true, .. } => report.stale_rejected += 1,
            What::Write {
                register, outcome, ..
            } => match outcome {
                Outcome::Ok => match register {
                    Register::Plain => report.stored_plain += 1,
                    Register::Fenced => report.stored_fenced += 1,
                },
                Outcome::Stale => report.stale_rejected += 1,
                Outcome::Failed => failure_times.push(e.t),
            },
            What::Fault { started: true, .. } => faults.push((e.t, None)),
            What::Fault { started: false, .. } => {
                if let Some(open) = faults.iter_mut().rev().find(|f| f.1.is_none()) {
                    open.1 = Some(e.t);
                }
            }
            What::Observed { what } => report.observed.push(what.clone()),
            What::Read { .. } | What::ReleaseDone { .. } => {}
        }
    }
    let acqs: Vec<Acquisition> = acqs.into_values().collect();
    report.acquisitions = acqs.len();
    report.granted = acqs.iter().filter(|a| a.ok.is_some()).count();
    report.unknown = acqs.iter().filter(|a| a.unknown).count();

    // Critical sections: overlaps of any kind, and sections that outlived the TTL.
    let mut sections: Vec<(u64, u64)> = acqs
        .iter()
        .filter_map(|a| Some((a.enter?, a.exit?)))
        .collect();
    sections.sort_unstable();
    for (i, &(_, end)) in sections.iter().enumerate() {
        for &(other_start, other_end) in &sections[i + 1..] {
            if other_start >= end {
                break;
            }
            report.overlaps += 1;
            let overlap = end.min(other_end) - other_start;
            report.longest_overlap_ms = report.longest_overlap_ms.max(ms(overlap));
        }
    }
    report.outlived_leases = acqs
        .iter()
        .filter(|a| matches!((a.enter, a.exit), (Some(s), Some(e)) if e - s > a.ttl_ns))
        .count();

    // The mutex model: while A surely held the lock, no B may be granted.
    let granted: Vec<&Acquisition> = acqs.iter().filter(|a| a.ok.is_some()).collect();
    for a in &granted {
        let Some((a_ok, _)) = a.ok else { continue };
        let surely_held_until = a
            .release_invoke
            .unwrap_or(u64::MAX)
            .min(a.invoke + a.ttl_ns);
        for b in &granted {
            let Some((b_ok, _)) = b.ok else { continue };
            if std::ptr::eq(*a, *b) {
                continue;
            }
            if b.invoke >= a_ok && b_ok <= surely_held_until {
                report.mutex_violations += 1;
            }
        }
    }

    // Tokens: unique, and in real-time order.
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for a in &granted {
        if let Some((_, fence)) = a.ok {
            *seen.entry(fence).or_default() += 1;
        }
    }
    report.fence_violations += seen
        .values()
        .filter(|&&n| n > 1)
        .map(|n| n - 1)
        .sum::<usize>();
    let mut by_ok: Vec<(u64, u64)> = granted.iter().filter_map(|a| a.ok).collect();
    by_ok.sort_unstable();
    let mut by_invoke: Vec<(u64, u64)> = granted
        .iter()
        .filter_map(|a| Some((a.invoke, a.ok?.1)))
        .collect();
    by_invoke.sort_unstable();
    // For each Y, every X granted before Y's invoke must have a lower token: compare
    // with the highest token granted before it.
    let mut highest_before = 0u64;
    let mut x = 0;
    for &(y_invoke, y_fence) in &by_invoke {
        while x < by_ok.len() && by_ok[x].0 < y_invoke {
            highest_before = highest_before.max(by_ok[x].1);
            x += 1;
        }
        if x > 0 && highest_before >= y_fence {
            report.fence_violations += 1;
        }
    }

    report.lost_plain = report.stored_plain as i64 - final_plain as i64;
    report.lost_fenced = report.stored_fenced as i64 - final_fenced as i64;

    // What the faults did, and how soon acquisitions came back.
    report.failures_during_faults = failure_times
        .iter()
        .filter(|&&t| {
            faults
                .iter()
                .any(|&(s, e)| t >= s && e.is_none_or(|e| t <= e + 1_000_000_000))
        })
        .count();
    let mut oks: Vec<u64> = granted
        .iter()
        .filter_map(|a| a.ok.map(|(t, _)| t))
        .collect();
    oks.sort_unstable();
    for &(start, end) in &faults {
        let Some(end) = end else { continue };
        // Gaps between grants (and the fault's edges) inside the fault.
        let mut last = start;
        for &t in oks.iter().filter(|&&t| t > start && t < end) {
            report.longest_stall_ms = report.longest_stall_ms.max(ms(t - last));
            last = t;
        }
        report.longest_stall_ms = report.longest_stall_ms.max(ms(end - last));
        if let Some(next) = oks.iter().find(|&&t| t >= end) {
            let r = ms(next - end);
            report.recovery_ms = Some(report.recovery_ms.map_or(r, |m: f64| m.max(r)));
        }
    }
    report
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, worker: u32, what: What) -> Event {
        Event { t, worker, what }
    }

    /// One acquisition of `worker` from `start` ms, granted `fence`, holding for `hold` ms.
    fn held(worker: u32, acq: u64, start: u64, fence: u64, hold: u64) -> Vec<Event> {
        let ms = 1_000_000;
        vec![
            ev(start * ms, worker, What::AcquireInvoke { acq, ttl_ms: 100 }),
            ev(start * ms + 1, worker, What::AcquireOk { acq, fence }),
            ev(start * ms + 2, worker, What::Enter { acq }),
            ev((start + hold) * ms, worker, What::Exit { acq }),
            ev((start + hold) * ms + 1, worker, What::ReleaseInvoke { acq }),
        ]
    }

    #[test]
    fn a_correct_history_passes() {
        let mut h = held(0, 0, 0, 1, 50);
        h.extend(held(1, 0, 60, 2, 50));
        let r = check(&h, 0, 0);
        assert_eq!(
            (
                r.granted,
                r.overlaps,
                r.mutex_violations,
                r.fence_violations
            ),
            (2, 0, 0, 0)
        );
    }

    #[test]
    fn a_grant_while_another_surely_holds_is_a_violation() {
        let mut h = held(0, 0, 0, 1, 80);
        h.extend(held(1, 0, 20, 2, 10));
        let r = check(&h, 0, 0);
        assert_eq!(r.mutex_violations, 1);
        assert_eq!(r.overlaps, 1);
    }

    #[test]
    fn a_holder_past_its_ttl_overlaps_without_violating_the_mutex() {
        // Worker 0 holds for 300 ms with a 100 ms TTL; worker 1 is granted at 150 ms.
        let mut h = held(0, 0, 0, 1, 300);
        h.extend(held(1, 0, 150, 2, 10));
        let r = check(&h, 0, 0);
        assert_eq!(
            (r.overlaps, r.mutex_violations, r.outlived_leases),
            (1, 0, 1)
        );
    }

    #[test]
    fn tokens_out_of_order_or_twice_are_violations() {
        let mut h = held(0, 0, 0, 5, 10);
        h.extend(held(1, 0, 20, 5, 10));
        h.extend(held(2, 0, 40, 4, 10));
        let r = check(&h, 0, 0);
        // 5 twice, and 4 after 5.
        assert_eq!(r.fence_violations, 3);
    }

    #[test]
    fn stored_writes_beyond_the_final_value_are_lost_updates() {
        let h = vec![
            ev(
                1,
                0,
                What::Write {
                    acq: 0,
                    register: Register::Plain,
                    value: 1,
                    outcome: Outcome::Ok,
                },
            ),
            ev(
                2,
                1,
                What::Write {
                    acq: 0,
                    register: Register::Plain,
                    value: 1,
                    outcome: Outcome::Ok,
                },
            ),
            ev(
                3,
                1,
                What::Write {
                    acq: 0,
                    register: Register::Fenced,
                    value: 1,
                    outcome: Outcome::Ok,
                },
            ),
            ev(
                4,
                0,
                What::Write {
                    acq: 0,
                    register: Register::Fenced,
                    value: 1,
                    outcome: Outcome::Stale,
                },
            ),
        ];
        let r = check(&h, 1, 1);
        assert_eq!((r.lost_plain, r.lost_fenced, r.stale_rejected), (1, 0, 1));
    }
}
