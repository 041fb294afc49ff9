//! `dlock`: run a command under a distributed lock.
//!
//! ```text
//! dlock run [--url URL] [-n | -w 10s] [--ttl 30s] KEY -- COMMAND [ARGS...]
//! dlock run [--url URL] KEY -c 'shell string'
//! dlock status [--url URL] [--json] KEY
//! dlock elect [--url URL] [--value V] NAME -- COMMAND [ARGS...]
//! dlock elect [--url URL] --observe NAME
//! ```
//!
//! See `dlock help`, `dlock run --help`, `dlock elect --help` and `docs/cli.md` for the flags, the environment and the
//! exit codes.
#![forbid(unsafe_code)]

mod args;
mod duration;
mod elect;
mod exit;
mod hold;
mod progress;
mod run;
mod status;
mod supervise;

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(exit::USAGE),
            };
        }
    };
    let code = match cli.command {
        Command::Supervise { parent, command } => supervise::supervise(parent, command),
        // One thread: the supervisor's parent-death signal follows the thread that
        // spawned it, and this one lives until dlock exits.
        Command::Run(args) => on_one_thread(run::run(args)),
        Command::Status(args) => on_one_thread(status::status(args)),
        Command::Elect(args) => on_one_thread(elect::elect(args)),
    };
    ExitCode::from(code)
}

fn on_one_thread(work: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("dlock: {e}");
            exit::SOFTWARE
        }
    }
}
