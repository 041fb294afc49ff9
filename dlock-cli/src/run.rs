//! `dlock run`: take the lock, run the command while the lease holds, release.

use std::{ffi::OsString, time::Duration};

use dlock::{Acquire, DynLock, Error, Lease, LockExt};

use crate::{
    args::RunArgs,
    exit,
    hold::{Child, Signals, Stop, failed, hold, report, stop},
    progress::Progress,
};

/// The TTL when `--ttl` is not given (fitted to a backend with one fixed TTL).
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// What the flags ask for, checked.
struct Plan {
    url: String,
    key: String,
    ttl: Duration,
    /// `--ttl` was given: never changed to fit the backend.
    ttl_given: bool,
    renew: Duration,
    /// `--renew-every` was given.
    renew_given: bool,
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
        Ok(plan) => report(execute(plan).await),
        Err(stopped) => report(Err(stopped)),
    }
}

fn plan(args: RunArgs) -> Result<Plan, Stop> {
    let usage = |m: String| stop(exit::USAGE, m);
    let url = crate::args::shared_backend(args.url).map_err(usage)?;
    let ttl = args.ttl.unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() {
        return Err(usage("--ttl must be more than 0".into()));
    }
    let renew = args.renew_every.unwrap_or(ttl / 3);
    if renew.is_zero() {
        return Err(usage("--renew-every must be more than 0".into()));
    }
    if args.grace < Duration::from_millis(100) {
        return Err(usage(
            "--grace must be at least 100ms, to stop the command before the lease expires".into(),
        ));
    }
    check_renewal_room(ttl, renew, args.grace)?;
    let command = crate::args::command_line(args.shell, args.command).ok_or_else(|| {
        usage(
            "no command: dlock run KEY -- COMMAND [ARGS...], or dlock run KEY -c 'SHELL STRING'"
                .into(),
        )
    })?;
    let wait = if args.no_wait {
        Some(Duration::ZERO)
    } else {
        args.wait
    };
    Ok(Plan {
        url,
        key: args.key,
        ttl,
        ttl_given: args.ttl.is_some(),
        renew,
        renew_given: args.renew_every.is_some(),
        grace: args.grace,
        wait,
        conflict: args.conflict_exit_code,
        command,
    })
}

/// A renewal must land before validity falls to the grace: validity is the TTL
/// less the drift allowance (1 % + 2 ms), and a tenth of the TTL is left for the
/// renewal's round trip.
fn check_renewal_room(ttl: Duration, renew: Duration, grace: Duration) -> Result<(), Stop> {
    let room = ttl
        .saturating_sub(ttl / 100 + Duration::from_millis(2))
        .saturating_sub(ttl / 10);
    if renew + grace >= room {
        return Err(stop(
            exit::USAGE,
            format!(
                "--renew-every {renew:?} plus --grace {grace:?} must be less than {room:?} (--ttl {ttl:?} \
                 less drift and a tenth for the renewal's round trip), or the command would be \
                 stopped before a renewal could keep the lease"
            ),
        ));
    }
    Ok(())
}

async fn execute(mut plan: Plan) -> Result<u8, Stop> {
    let mut signals = Signals::install()?;
    let lock = dlock::connect(&plan.url).await.map_err(failed)?;
    if !plan.ttl_given {
        // A backend with one fixed TTL (etcd in session mode) gets that one.
        let fitted = lock.capabilities().fit_ttl(plan.ttl);
        if fitted != plan.ttl {
            plan.ttl = fitted;
            if !plan.renew_given {
                plan.renew = fitted / 3;
            }
            check_renewal_room(plan.ttl, plan.renew, plan.grace)?;
        }
    }
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
    let child = Child {
        what: format!("the lease on `{}`", plan.key),
        grace: plan.grace,
        env: vec![
            ("DLOCK_KEY", plan.key.clone()),
            ("DLOCK_BACKEND", dlock::redact_url(&plan.url)),
        ],
        command: &plan.command,
    };
    let code = hold(lease, child, &mut signals).await;
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
