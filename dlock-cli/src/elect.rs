//! `dlock elect`: run the command only while this process leads; or, with
//! `--observe`, print each leader as it changes.

use std::{ffi::OsString, io::Write, time::Duration};

use dlock::{Campaign, DynLock, Election, Error, LockExt, Wait};

use crate::{
    args::ElectArgs,
    exit,
    hold::{Child, Signals, Stop, failed, hold, report, stop},
    progress::Progress,
};

/// The shortest step-down margin accepted: the command must have time to stop
/// between the renew deadline and the backend's expiry.
const MIN_MARGIN: Duration = Duration::from_millis(100);

pub(crate) async fn elect(args: ElectArgs) -> u8 {
    report(elect_checked(args).await)
}

async fn elect_checked(args: ElectArgs) -> Result<u8, Stop> {
    let usage = |m: String| stop(exit::USAGE, m);
    let url = crate::args::shared_backend(args.url.clone()).map_err(usage)?;
    let command = if args.observe {
        None
    } else {
        Some(
            crate::args::command_line(args.shell.clone(), args.command.clone()).ok_or_else(
                || {
                    usage(
                        "no command: dlock elect NAME -- COMMAND [ARGS...], dlock elect NAME -c \
                         'SHELL STRING', or dlock elect --observe NAME"
                            .into(),
                    )
                },
            )?,
        )
    };
    if !args.observe {
        // The durations' order needs no backend: refuse it before connecting.
        options(&args, Wait::Forever)
            .validate(&dlock::Capabilities::default())
            .map_err(|e| stop(exit::USAGE, e.to_string()))?;
    }
    let mut signals = Signals::install()?;
    let lock = dlock::connect(&url).await.map_err(failed)?;
    let election = lock.election(&args.name).map_err(failed)?;
    let Some(command) = command else {
        return observe(&election, &mut signals).await;
    };
    let outcome = lead(&lock, &election, &url, &args, &command, &mut signals).await;
    lock.shutdown(lock.operation_timeout()).await;
    outcome
}

/// Campaigns, then runs the command while leading.
async fn lead(
    lock: &DynLock,
    election: &Election,
    url: &str,
    args: &ElectArgs,
    command: &[OsString],
    signals: &mut Signals,
) -> Result<u8, Stop> {
    let caps = lock.capabilities();
    let wait = match (args.no_wait, args.wait) {
        (true, _) => Wait::No,
        (false, Some(limit)) if limit.is_zero() => Wait::No,
        (false, Some(limit)) => Wait::For(limit),
        (false, None) => Wait::Forever,
    };
    let options = options(args, wait);
    options
        .validate(&caps)
        .map_err(|e| stop(exit::USAGE, e.to_string()))?;
    let margin = options.step_down_margin(&caps);
    if margin < MIN_MARGIN {
        return Err(stop(
            exit::USAGE,
            format!(
                "--renew-deadline {:?} leaves {margin:?} before --ttl {:?} (less drift) runs \
                 out: at least {MIN_MARGIN:?} is needed to stop the command in between",
                args.renew_deadline, args.ttl
            ),
        ));
    }
    let value = args.value.clone().unwrap_or_else(default_value);
    let busy = || {
        stop(
            args.conflict_exit_code,
            format!("another candidate leads `{}`", args.name),
        )
    };
    let leader = match election.leader().await {
        Ok(Some(leader)) => Some(format!("led by {}", String::from_utf8_lossy(&leader.value))),
        Ok(None) => None,
        Err(e) => return Err(failed(e)),
    };
    let campaign = election.campaign(value, options);
    let elected = tokio::select! {
        elected = async {
            match &leader {
                Some(leader) if wait != Wait::No => {
                    Progress::new(&args.name, leader.clone()).show_while(campaign).await
                }
                _ => campaign.await,
            }
        } => elected,
        signal = signals.next() => {
            // Dropping the campaign withdrew the candidacy; shutdown (by the
            // caller) awaits its release.
            return Ok(exit::signalled(signal.as_raw()));
        }
    };
    let leadership = match elected {
        Ok(leadership) => leadership,
        Err(Error::Timeout { cause: None, .. }) => return Err(busy()),
        Err(e) => return Err(failed(e)),
    };
    let child = Child {
        what: format!("the leadership of `{}`", args.name),
        grace: margin,
        env: vec![
            ("DLOCK_ELECTION", args.name.clone()),
            ("DLOCK_BACKEND", dlock::redact_url(url)),
        ],
        command,
    };
    hold(leadership, child, signals).await
}

/// Prints `VALUE<TAB>TOKEN` for each leader, until a signal.
async fn observe(election: &Election, signals: &mut Signals) -> Result<u8, Stop> {
    let mut changes = election.observe();
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(leader)) => {
                    let mut out = std::io::stdout().lock();
                    let line = writeln!(out, "{}\t{}", String::from_utf8_lossy(&leader.value), leader.fence)
                        .and_then(|()| out.flush());
                    if line.is_err() {
                        // The reader went away (a closed pipe): nothing more to say.
                        return Ok(0);
                    }
                }
                Some(Err(e)) => {
                    eprintln!("dlock: cannot read the leader ({e}); trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Err(stop(exit::UNAVAILABLE, "the backend ended the observation")),
            },
            signal = signals.next() => return Ok(exit::signalled(signal.as_raw())),
        }
    }
}

fn options(args: &ElectArgs, wait: Wait) -> Campaign {
    Campaign::ttl(args.ttl)
        .renew_deadline(args.renew_deadline)
        .retry_period(args.retry_period)
        .wait_mode(wait)
}

/// `HOSTNAME:PID`, what a candidate campaigns with unless `--value` says otherwise.
fn default_value() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
