//! The waiting line on stderr, while `dlock` waits for a lock or a leadership.

use std::{io::IsTerminal, time::Duration};

use dlock::BootInstant;

/// The waiting line on stderr: once, or updated in place on a terminal.
pub(crate) struct Progress<'a> {
    key: &'a str,
    /// `held by ...`: the holder's id where the backend can tell.
    holder: String,
    terminal: bool,
}

impl<'a> Progress<'a> {
    pub(crate) fn new(key: &'a str, holder: String) -> Self {
        Progress {
            key,
            holder,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub(crate) async fn show_while<T>(&self, work: impl std::future::Future<Output = T>) -> T {
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
