//! The exit codes `dlock run` documents, most important first.

/// The lease was lost while the command ran, whatever the command then did.
pub(crate) const LEASE_LOST: u8 = 75;
/// The lock was busy or the wait ran out (flock's conflict code; `-E` changes it).
pub(crate) const CONFLICT_DEFAULT: u8 = 1;
/// The command was not found (as `env` says).
pub(crate) const NOT_FOUND: u8 = 127;
/// The command could not be executed.
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// The backend could not be reached (sysexits' EX_UNAVAILABLE).
pub(crate) const UNAVAILABLE: u8 = 69;
/// Usage errors (sysexits' EX_USAGE).
pub(crate) const USAGE: u8 = 64;
/// Something else failed inside dlock (sysexits' EX_SOFTWARE).
pub(crate) const SOFTWARE: u8 = 70;

/// The exit code for a backend error: usage for what the input or the backend
/// refuses outright, unavailable for the rest.
pub(crate) fn of_error(error: &dlock::Error) -> u8 {
    if error.is_invalid_input() || matches!(error, dlock::Error::Unsupported { .. }) {
        USAGE
    } else {
        UNAVAILABLE
    }
}

/// The exit code that reports `status`: its code, or 128+N if signal N ended it.
pub(crate) fn of_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(u8::MAX),
        (None, Some(signal)) => signalled(signal),
        (None, None) => SOFTWARE,
    }
}

/// 128 + N, as a shell reports a process killed by signal N.
pub(crate) fn signalled(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(255)
}
