//! The supervisor: a small process `dlock run` starts in its own process group,
//! in front of the command (which joins that group). It asks the kernel for a
//! signal when `dlock run` dies, even by SIGKILL, and then kills the whole group:
//! the command never outlives the process that holds its lease.

use std::{ffi::OsString, io::ErrorKind};

use rustix::process::{self, Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::exit;

/// Runs `command` and returns its exit code (128+N if signal N killed it).
pub(crate) fn supervise(parent: i32, command: Vec<OsString>) -> u8 {
    // First the death signal, then the check: a parent that died in between is
    // seen by the check.
    if let Err(e) = process::set_parent_process_death_signal(Some(Signal::USR1)) {
        eprintln!("dlock: cannot ask for a parent-death signal: {e}");
        return exit::SOFTWARE;
    }
    if process::getppid() != Pid::from_raw(parent) {
        return exit::LEASE_LOST;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dlock: {e}");
            return exit::SOFTWARE;
        }
    };
    runtime.block_on(watch(command))
}

async fn watch(command: Vec<OsString>) -> u8 {
    // Handled, so signals `dlock run` sends the group reach the command and leave
    // the supervisor standing; SIGUSR1 is the parent's death.
    let streams = (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut orphaned), Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
        eprintln!("dlock: cannot handle signals");
        return exit::SOFTWARE;
    };
    let Some((program, args)) = command.split_first() else {
        return exit::USAGE;
    };
    let mut child = match tokio::process::Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            let name = program.to_string_lossy();
            return if e.kind() == ErrorKind::NotFound {
                eprintln!("dlock: {name}: command not found");
                exit::NOT_FOUND
            } else {
                eprintln!("dlock: {name}: {e}");
                exit::CANNOT_EXECUTE
            };
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => exit::of_status(status),
                    Err(e) => {
                        eprintln!("dlock: waiting for the command: {e}");
                        exit::SOFTWARE
                    }
                };
            }
            _ = orphaned.recv() => {
                // `dlock run` died: nobody renews the lease any more.
                let _ = process::kill_process_group(process::getpgrp(), Signal::KILL);
                return exit::LEASE_LOST;
            }
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}
