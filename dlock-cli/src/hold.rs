//! Running the command while a lease or a leadership holds, for `dlock run` and
//! `dlock elect` alike: the supervisor, the loss path (SIGTERM, then SIGKILL before
//! the backend's expiry), signal forwarding, and the exit code.

use std::{ffi::OsString, future::Future, time::Duration};

use dlock::{BootInstant, Error, FenceToken, Leadership, Lease};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit;

/// Why `dlock` stops before the command's end: an exit code and one line.
pub(crate) struct Stop {
    pub(crate) code: u8,
    pub(crate) message: String,
}

pub(crate) fn stop(code: u8, message: impl Into<String>) -> Stop {
    Stop {
        code,
        message: message.into(),
    }
}

/// Prints a stop's line and returns its code.
pub(crate) fn report(outcome: Result<u8, Stop>) -> u8 {
    match outcome {
        Ok(code) => code,
        Err(Stop { code, message }) => {
            eprintln!("dlock: {message}");
            code
        }
    }
}

/// How a backend error ends `dlock`.
pub(crate) fn failed(error: Error) -> Stop {
    stop(exit::of_error(&error), error.to_string())
}

/// The signals `dlock` passes on to the command (or exits on while waiting).
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Signals, Stop> {
        let make = |kind| signal(kind).map_err(|e| stop(exit::SOFTWARE, format!("signals: {e}")));
        Ok(Signals {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::INT,
            _ = self.term.recv() => Signal::TERM,
            _ = self.hup.recv() => Signal::HUP,
        }
    }
}

/// What the command runs under: a lease, or a leadership.
pub(crate) trait Held {
    /// The token the command gets in `DLOCK_FENCE`.
    fn fence(&self) -> FenceToken;
    /// Until when the backend surely keeps it, unless renewed.
    fn valid_until(&self) -> BootInstant;
    /// Resolves once it is lost.
    fn lost(&self) -> impl Future<Output = ()> + Send + 'static;
    /// Why it was lost, for the message.
    fn why_lost(&self) -> String;
    /// Gives it up: `Err(LeaseLost)` if it was lost before.
    fn finish(self) -> impl Future<Output = Result<(), Error>>;
}

impl Held for Lease {
    fn fence(&self) -> FenceToken {
        Lease::fence(self)
    }

    fn valid_until(&self) -> BootInstant {
        Lease::valid_until(self)
    }

    fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        Lease::lost(self)
    }

    fn why_lost(&self) -> String {
        self.lost_reason()
            .map_or("lost".to_owned(), |r| r.to_string())
    }

    async fn finish(mut self) -> Result<(), Error> {
        self.release().await
    }
}

impl Held for Leadership {
    fn fence(&self) -> FenceToken {
        Leadership::fence(self)
    }

    fn valid_until(&self) -> BootInstant {
        Leadership::valid_until(self)
    }

    fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        Leadership::lost(self)
    }

    fn why_lost(&self) -> String {
        "no longer the leader: not renewed within the renew deadline, or deposed".to_owned()
    }

    async fn finish(self) -> Result<(), Error> {
        self.resign().await
    }
}

/// The command and what it is told.
pub(crate) struct Child<'a> {
    /// What it runs under, for messages: "the lease on `KEY`".
    pub(crate) what: String,
    /// Stop the command once this little validity is left without a renewal.
    pub(crate) grace: Duration,
    /// Variables set for it (every `DLOCK_*` one dlock sets is removed first, so a
    /// nested dlock never shows the outer one's).
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) command: &'a [OsString],
}

/// Every variable dlock sets for a command.
const OWN_VARIABLES: [&str; 4] = [
    "DLOCK_KEY",
    "DLOCK_FENCE",
    "DLOCK_BACKEND",
    "DLOCK_ELECTION",
];

/// Runs the command under `held` and stops it if `held` is lost; gives `held` up
/// at the end. Returns the exit code.
pub(crate) async fn hold(
    held: impl Held,
    child: Child<'_>,
    signals: &mut Signals,
) -> Result<u8, Stop> {
    let exe = std::env::current_exe()
        .map_err(|e| stop(exit::SOFTWARE, format!("cannot find the dlock binary: {e}")))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__supervise")
        .arg(std::process::id().to_string())
        .arg("--")
        .args(child.command)
        .process_group(0);
    for name in OWN_VARIABLES {
        command.env_remove(name);
    }
    command.env("DLOCK_FENCE", held.fence().to_string());
    for (name, value) in &child.env {
        command.env(name, value);
    }
    // Spawned from this (the main) thread, which lives as long as the child: the
    // supervisor's parent-death signal follows the thread that spawned it.
    let mut supervisor = command
        .spawn()
        .map_err(|e| stop(exit::SOFTWARE, format!("cannot start the supervisor: {e}")))?;
    let group = supervisor
        .id()
        .and_then(|pid| Pid::from_raw(pid as i32))
        .ok_or_else(|| stop(exit::SOFTWARE, "the supervisor has no pid"))?;
    let signal_group = |signal: Signal| {
        let _ = rustix::process::kill_process_group(group, signal);
    };

    let lost = held.lost();
    tokio::pin!(lost);
    let mut lost_at: Option<BootInstant> = None;
    let mut kill_at: Option<BootInstant> = None;
    let status = loop {
        let valid_until = held.valid_until();
        let at_risk = valid_until.saturating_sub(child.grace);
        tokio::select! {
            status = supervisor.wait() => {
                // The supervisor ends with the command; whatever the command left
                // running in its group (a job sent to the background, a daemon)
                // must not outlive the lease either.
                signal_group(Signal::KILL);
                break status;
            }
            () = &mut lost, if lost_at.is_none() => {
                kill_at = Some(stop_command(&child.what, &held.why_lost(), valid_until, child.grace, &signal_group));
                lost_at = Some(BootInstant::now());
            }
            () = tokio::time::sleep(at_risk.remaining()), if lost_at.is_none() => {
                if held.valid_until() == valid_until {
                    let reason = format!("not renewed, and only {:.1?} of validity is left", valid_until.remaining());
                    kill_at = Some(stop_command(&child.what, &reason, valid_until, child.grace, &signal_group));
                    lost_at = Some(BootInstant::now());
                }
            }
            () = tokio::time::sleep(kill_at.map_or(Duration::MAX, BootInstant::remaining)), if kill_at.is_some() => {
                signal_group(Signal::KILL);
                eprintln!("dlock: the command did not stop: SIGKILL to its process group");
                kill_at = None;
            }
            signal = signals.next() => signal_group(signal),
        }
    };
    let code = match status {
        Ok(status) => exit::of_status(status),
        Err(e) => {
            return Err(stop(
                exit::SOFTWARE,
                format!("waiting for the command: {e}"),
            ));
        }
    };
    let finished = held.finish().await;
    if lost_at.is_some() {
        return Ok(exit::LEASE_LOST);
    }
    match finished {
        Ok(()) => Ok(code),
        Err(e) if e.is_lease_lost() => {
            eprintln!("dlock: {e}, while the command ran");
            Ok(exit::LEASE_LOST)
        }
        Err(e) => {
            eprintln!(
                "dlock: could not give up {} ({e}); its TTL will free it",
                child.what
            );
            Ok(code)
        }
    }
}

/// SIGTERM to the command's group now; returns when SIGKILL follows: half the
/// grace from now, and never later than half the grace before the lease expires.
fn stop_command(
    what: &str,
    reason: &str,
    valid_until: BootInstant,
    grace: Duration,
    signal_group: &impl Fn(Signal),
) -> BootInstant {
    let kill_at = BootInstant::now()
        .saturating_add(grace / 2)
        .min(valid_until.saturating_sub(grace / 2));
    // The signal first: writing to a stalled stderr must not delay it.
    signal_group(Signal::TERM);
    eprintln!("dlock: {what} is at risk or lost ({reason}): SIGTERM to the command");
    kill_at
}
