//! The command line.

use std::{ffi::OsString, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::duration;

/// Run a command under a distributed lock, on Redis, Redlock or etcd.
#[derive(Parser, Debug)]
#[command(name = "dlock", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Take the lock on KEY, run the command while holding it, release it.
    ///
    /// The command runs in its own process group and never outlives the lease:
    /// once the validity left falls to --grace with no successful renewal, or the
    /// backend says the lease is gone, the group gets SIGTERM, then SIGKILL before
    /// the lease expires. Exit codes: 75 lease lost; else the command's code (128+N
    /// if signal N killed it); the conflict code (1, see -E) if the lock was busy or
    /// the wait ran out; 128+N if dlock was signalled while waiting; 127/126 command
    /// not found / not executable; 69 backend unreachable; 64 usage errors.
    Run(RunArgs),
    /// Show whether KEY is held: its fence, the time left, and the holder's id.
    ///
    /// Reads without taking the lock (it burns no token). Exits 0 if held, 1 if
    /// free, 69 if the backend is unreachable, 64 on usage errors.
    Status(StatusArgs),
    /// Run the command only while this process leads the election NAME.
    ///
    /// Campaigns (waiting in line where the backend is FIFO), runs the command once
    /// elected, and resigns when it ends, so the next candidate leads at once. The
    /// command gets DLOCK_ELECTION and DLOCK_FENCE (the leadership's token). It is
    /// stopped as under `dlock run` once leadership is at risk: at the renew
    /// deadline without a renewal, or when deposed; SIGKILL follows before the
    /// leadership could pass to another candidate. Exit codes as for `dlock run`.
    /// With --observe, prints the leader's value and token, one line per change,
    /// until interrupted.
    Elect(ElectArgs),
    /// The supervisor `dlock run` starts in front of the command.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The pid of the `dlock run` that started this supervisor.
        parent: i32,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The backend, as for `dlock run`.
    #[arg(long, env = "DLOCK_URL", hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// The lock key.
    pub(crate) key: String,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The backend: redis://, rediss://, redlock://, etcd://, etcds:// (memory:// is
    /// refused: it means nothing across processes).
    #[arg(long, env = "DLOCK_URL", hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// Fail at once if the lock is held.
    #[arg(short = 'n', long = "no-wait", conflicts_with = "wait")]
    pub(crate) no_wait: bool,
    /// Wait at most this long for the lock (0 means --no-wait). Default: for ever.
    #[arg(short = 'w', long = "wait", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) wait: Option<Duration>,
    /// How long the backend holds the lock unless renewed. Default: 30s, or the
    /// backend's own TTL where it has only one (etcd in session mode).
    #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) ttl: Option<Duration>,
    /// Renew the lease this often (default: a third of the TTL).
    #[arg(long = "renew-every", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) renew_every: Option<Duration>,
    /// Stop the command once this little validity is left without a renewal.
    #[arg(long, default_value = "5s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) grace: Duration,
    /// The exit code when the lock is busy or the wait runs out.
    #[arg(short = 'E', long = "conflict-exit-code", default_value_t = crate::exit::CONFLICT_DEFAULT, value_name = "CODE")]
    pub(crate) conflict_exit_code: u8,
    /// Write dlock's metrics to this file at exit, in Prometheus text format, for
    /// node_exporter's textfile collector (a short run is never scraped). Written
    /// to a temporary file first and renamed, so the collector never reads half.
    #[arg(long = "metrics-textfile", value_name = "PATH")]
    pub(crate) metrics_textfile: Option<std::path::PathBuf>,
    /// Run this string with `sh -c` instead of a command.
    #[arg(short = 'c', value_name = "SHELL_STRING", conflicts_with = "command")]
    pub(crate) shell: Option<String>,
    /// The lock key.
    pub(crate) key: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub(crate) struct ElectArgs {
    /// The backend, as for `dlock run`.
    #[arg(long, env = "DLOCK_URL", hide_env_values = true)]
    pub(crate) url: Option<String>,
    /// Print each leader as it changes (value, a tab, its token) instead of
    /// campaigning.
    #[arg(long, conflicts_with_all = ["value", "command", "shell", "no_wait", "wait"])]
    pub(crate) observe: bool,
    /// The value this candidate campaigns with, which observers see (default:
    /// HOSTNAME:PID).
    #[arg(long)]
    pub(crate) value: Option<String>,
    /// Fail at once if another candidate leads.
    #[arg(short = 'n', long = "no-wait", conflicts_with = "wait")]
    pub(crate) no_wait: bool,
    /// Wait at most this long to be elected (0 means --no-wait). Default: for ever.
    #[arg(short = 'w', long = "wait", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) wait: Option<Duration>,
    /// How long the backend keeps a leadership unless renewed (client-go's lease
    /// duration).
    #[arg(long, default_value = "15s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) ttl: Duration,
    /// Step down, and stop the command, once this long has passed since the last
    /// renewal was sent. Less than --ttl.
    #[arg(long = "renew-deadline", default_value = "10s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) renew_deadline: Duration,
    /// Renew the leadership this often. Less than --renew-deadline.
    #[arg(long = "retry-period", default_value = "2s", value_parser = duration::parse, value_name = "DURATION")]
    pub(crate) retry_period: Duration,
    /// The exit code when another candidate leads and the wait runs out.
    #[arg(short = 'E', long = "conflict-exit-code", default_value_t = crate::exit::CONFLICT_DEFAULT, value_name = "CODE")]
    pub(crate) conflict_exit_code: u8,
    /// Run this string with `sh -c` instead of a command.
    #[arg(short = 'c', value_name = "SHELL_STRING", conflicts_with = "command")]
    pub(crate) shell: Option<String>,
    /// The election's name.
    pub(crate) name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// The command from `-- COMMAND...` or `-c STRING`; `None` if neither.
pub(crate) fn command_line(shell: Option<String>, command: Vec<OsString>) -> Option<Vec<OsString>> {
    match (shell, command.is_empty()) {
        (Some(shell), true) => Some(vec!["/bin/sh".into(), "-c".into(), shell.into()]),
        (None, false) => Some(command),
        _ => None,
    }
}

/// The backend URL from `--url` or `DLOCK_URL`, refusing `memory://`, which means
/// nothing across processes.
pub(crate) fn shared_backend(url: Option<String>) -> Result<String, String> {
    let url = url.ok_or("no backend: pass --url URL or set DLOCK_URL")?;
    if url.trim_start().starts_with("memory:") {
        return Err(
            "memory:// locks only within one process; dlock needs a shared backend \
                    (redis://, redlock://, etcd://)"
                .into(),
        );
    }
    Ok(url)
}
