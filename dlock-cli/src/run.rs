//! `dlock run`: take the lock, run the command while the lease holds, release.

use std::{ffi::OsString, io::IsTerminal, time::Duration};

use dlock::{Acquire, BootInstant, DynLock, Error, Lease, LockExt};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::{args::RunArgs, exit};

/// Why `dlock run` stops before the command's end: an exit code and one line.
struct Stop {
    code: u8,
    message: String,
}

fn stop(code: u8, message: impl Into<String>) -> Stop {
    Stop {
        code,
        message: message.into(),
    }
}

/// What the flags ask for, checked.
struct Plan {
    url: String,
    key: String,
    ttl: Duration,
    renew: Duration,
    grace: Duration,
    /// `None`: for ever; `Some(ZERO)`: do not wait.
    wait: Option<Duration>,
    conflict: u8,
    command: Vec<OsString>,
}

/// Runs `dlock run` and returns its exit code.
pub(crate) async fn run(args: RunArgs) -> u8 {
    let textfile = args.metrics_textfile.clone();
    let metrics = match &textfile {
        Some(_) => match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                dlock::metrics::describe();
                Some(handle)
            }
            Err(e) => {
                eprintln!("dlock: cannot record metrics: {e}");
                return exit::SOFTWARE;
            }
        },
        None => None,
    };
    let code = run_planned(args).await;
    if let (Some(path), Some(handle)) = (textfile, metrics)
        && let Err(e) = write_textfile(&path, &handle.render())
    {
        eprintln!("dlock: cannot write the metrics to {}: {e}", path.display());
    }
    code
}

/// Writes `text` to `path` through a temporary file in the same directory.
fn write_textfile(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

async fn run_planned(args: RunArgs) -> u8 {
    match plan(args) {
        Ok(plan) => match execute(plan).await {
            Ok(code) => code,
            Err(Stop { code, message }) => {
                eprintln!("dlock: {message}");
                code
            }
        },
        Err(Stop { code, message }) => {
            eprintln!("dlock: {message}");
            code
        }
    }
}

fn plan(args: RunArgs) -> Result<Plan, Stop> {
    let usage = |m: String| stop(exit::USAGE, m);
    let url = crate::args::shared_backend(args.url).map_err(usage)?;
    if args.ttl.is_zero() {
        return Err(usage("--ttl must be more than 0".into()));
    }
    let renew = args.renew_every.unwrap_or(args.ttl / 3);
    if renew.is_zero() {
        return Err(usage("--renew-every must be more than 0".into()));
    }
    if args.grace < Duration::from_millis(100) {
        return Err(usage(
            "--grace must be at least 100ms, to stop the command before the lease expires".into(),
        ));
    }
    // A renewal must land before validity falls to the grace: validity is the TTL
    // less the drift allowance (1 % + 2 ms), and a tenth of the TTL is left for the
    // renewal's round trip.
    let room = args
        .ttl
        .saturating_sub(args.ttl / 100 + Duration::from_millis(2))
        .saturating_sub(args.ttl / 10);
    if renew + args.grace >= room {
        return Err(usage(format!(
            "--renew-every {renew:?} plus --grace {:?} must be less than {room:?} (--ttl {:?} \
             less drift and a tenth for the renewal's round trip), or the command would be \
             stopped before a renewal could keep the lease",
            args.grace, args.ttl
        )));
    }
    let command = match (args.shell, args.command.is_empty()) {
        (Some(shell), true) => vec!["/bin/sh".into(), "-c".into(), shell.into()],
        (None, false) => args.command,
        _ => {
            return Err(usage(
                "no command: dlock run KEY -- COMMAND [ARGS...], or dlock run KEY -c 'SHELL STRING'"
                    .into(),
            ));
        }
    };
    let wait = if args.no_wait {
        Some(Duration::ZERO)
    } else {
        args.wait
    };
    Ok(Plan {
        url,
        key: args.key,
        ttl: args.ttl,
        renew,
        grace: args.grace,
        wait,
        conflict: args.conflict_exit_code,
        command,
    })
}

/// How a backend error ends `dlock run`.
fn failed(error: Error) -> Stop {
    if error.is_invalid_input() {
        stop(exit::USAGE, error.to_string())
    } else {
        stop(exit::UNAVAILABLE, error.to_string())
    }
}

/// The signals `dlock run` passes on to the command (or exits on while waiting).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, Stop> {
        let make = |kind| signal(kind).map_err(|e| stop(exit::SOFTWARE, format!("signals: {e}")));
        Ok(Signals {
            int: make(SignalKind::interrupt())?,
            term: make(SignalKind::terminate())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::INT,
            _ = self.term.recv() => Signal::TERM,
            _ = self.hup.recv() => Signal::HUP,
        }
    }
}

async fn execute(plan: Plan) -> Result<u8, Stop> {
    let mut signals = Signals::install()?;
    let lock = dlock::connect(&plan.url).await.map_err(failed)?;
    let opts = Acquire::ttl(plan.ttl).keep_alive(plan.renew.as_secs_f64() / plan.ttl.as_secs_f64());
    let lease = tokio::select! {
        taken = take(&lock, &plan, opts) => taken,
        signal = signals.next() => {
            // Give up the place in line before leaving.
            lock.shutdown(lock.operation_timeout()).await;
            return Ok(exit::signalled(signal.as_raw()));
        }
    };
    let lease = match lease {
        Ok(lease) => lease,
        Err(stopped) => {
            lock.shutdown(lock.operation_timeout()).await;
            return Err(stopped);
        }
    };
    let code = hold(&lock, lease, &plan, &mut signals).await;
    lock.shutdown(lock.operation_timeout()).await;
    code
}

/// Takes the lock as the flags say, with a progress line while waiting.
async fn take(lock: &DynLock, plan: &Plan, opts: Acquire) -> Result<Lease, Stop> {
    let held = || {
        stop(
            plan.conflict,
            format!("`{}` is held by another holder", plan.key),
        )
    };
    if let Some(lease) = lock
        .try_acquire_with(&plan.key, opts)
        .await
        .map_err(failed)?
    {
        return Ok(lease);
    }
    if plan.wait == Some(Duration::ZERO) {
        return Err(held());
    }
    let opts = match plan.wait {
        Some(limit) => opts.wait(limit),
        None => opts,
    };
    let holder = match lock.holder(&plan.key).await {
        Ok(Some(holder)) => format!("held by {}", holder.id),
        _ => "held by another holder".to_owned(),
    };
    let acquire = lock.acquire(&plan.key, opts);
    let taken = Progress::new(&plan.key, holder).show_while(acquire).await;
    match taken {
        Ok(lease) => Ok(lease),
        Err(Error::Timeout {
            cause: None,
            waited,
            ..
        }) => Err(stop(
            plan.conflict,
            format!("`{}` was still held after waiting {waited:.1?}", plan.key),
        )),
        Err(e) => Err(failed(e)),
    }
}

/// The waiting line on stderr: once, or updated in place on a terminal.
struct Progress<'a> {
    key: &'a str,
    /// `held by ...`: the holder's id where the backend can tell.
    holder: String,
    terminal: bool,
}

impl<'a> Progress<'a> {
    fn new(key: &'a str, holder: String) -> Self {
        Progress {
            key,
            holder,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    async fn show_while<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let started = BootInstant::now();
        if !self.terminal {
            eprintln!("dlock: waiting for `{}` ({})", self.key, self.holder);
            return work.await;
        }
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                out = &mut work => {
                    eprint!("\r\x1b[K");
                    return out;
                }
                _ = tick.tick() => {
                    let waited = BootInstant::now().saturating_duration_since(started).as_secs();
                    eprint!("\rdlock: waiting for `{}` ({}): {waited} s\x1b[K", self.key, self.holder);
                }
            }
        }
    }
}

/// Runs the command under `lease` and stops it if the lease is lost.
async fn hold(
    lock: &DynLock,
    mut lease: Lease,
    plan: &Plan,
    signals: &mut Signals,
) -> Result<u8, Stop> {
    let exe = std::env::current_exe()
        .map_err(|e| stop(exit::SOFTWARE, format!("cannot find the dlock binary: {e}")))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__supervise")
        .arg(std::process::id().to_string())
        .arg("--")
        .args(&plan.command)
        // A nested `dlock run` shows its own lock, never the outer one's.
        .env_remove("DLOCK_KEY")
        .env_remove("DLOCK_FENCE")
        .env_remove("DLOCK_BACKEND")
        .env("DLOCK_KEY", &plan.key)
        .env("DLOCK_FENCE", lease.fence().to_string())
        .env("DLOCK_BACKEND", dlock::redact_url(&plan.url))
        .process_group(0);
    // Spawned from this (the main) thread, which lives as long as the child: the
    // supervisor's parent-death signal follows the thread that spawned it.
    let mut child = command
        .spawn()
        .map_err(|e| stop(exit::SOFTWARE, format!("cannot start the supervisor: {e}")))?;
    let group = child
        .id()
        .and_then(|pid| Pid::from_raw(pid as i32))
        .ok_or_else(|| stop(exit::SOFTWARE, "the supervisor has no pid"))?;
    let signal_group = |signal: Signal| {
        let _ = rustix::process::kill_process_group(group, signal);
    };

    let lost = lease.lost();
    tokio::pin!(lost);
    let mut lost_at: Option<BootInstant> = None;
    let mut kill_at: Option<BootInstant> = None;
    let status = loop {
        let valid_until = lease.valid_until();
        let at_risk = valid_until.saturating_sub(plan.grace);
        tokio::select! {
            status = child.wait() => {
                // The supervisor ends with the command; whatever the command left
                // running in its group (a job sent to the background, a daemon)
                // must not outlive the lease either.
                signal_group(Signal::KILL);
                break status;
            }
            () = &mut lost, if lost_at.is_none() => {
                let reason = lease.lost_reason().map_or("lost".to_owned(), |r| r.to_string());
                kill_at = Some(stop_command(&plan.key, &reason, valid_until, plan.grace, &signal_group));
                lost_at = Some(BootInstant::now());
            }
            () = tokio::time::sleep(at_risk.remaining()), if lost_at.is_none() => {
                if lease.valid_until() == valid_until {
                    let reason = format!("not renewed, and only {:.1?} of validity is left", valid_until.remaining());
                    kill_at = Some(stop_command(&plan.key, &reason, valid_until, plan.grace, &signal_group));
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
    if lost_at.is_some() {
        drop(lease);
        return Ok(exit::LEASE_LOST);
    }
    match lease.release().await {
        Ok(()) => Ok(code),
        Err(e) if e.is_lease_lost() => {
            eprintln!("dlock: {e}, while the command ran");
            Ok(exit::LEASE_LOST)
        }
        Err(e) => {
            eprintln!(
                "dlock: could not release `{}` ({e}); its TTL of {:?} will free it",
                plan.key,
                lock.operation_timeout().max(plan.ttl)
            );
            Ok(code)
        }
    }
}

/// SIGTERM to the command's group now; returns when SIGKILL follows: half the
/// grace from now, and never later than half the grace before the lease expires.
fn stop_command(
    key: &str,
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
    eprintln!("dlock: the lease on `{key}` is at risk or lost ({reason}): SIGTERM to the command");
    kill_at
}
