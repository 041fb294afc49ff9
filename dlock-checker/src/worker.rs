//! A worker: acquire, read the registers, work, write them, release, logging each
//! step. Workers run without keep-alive, so each lease's validity is its TTL from
//! the acquisition's invoke, which is what the mutex check assumes.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dlock::{Acquire, DynFenceGate, DynLock, Error, FenceToken, FencedRead, LockExt};
use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::history::{Event, Outcome, Register, What, now};

/// The register read and written directly: a counter every update adds one to.
#[derive(Clone)]
pub enum Plain {
    /// In this process (the memory backend's workers are tasks).
    Memory(Arc<Mutex<u64>>),
    /// A key on the register store, a Redis the faults do not touch.
    Redis {
        /// The connection to the store.
        conn: redis::aio::MultiplexedConnection,
        /// The register's key.
        key: String,
    },
}

impl Plain {
    /// The counter's value (0 before the first write).
    pub async fn get(&self) -> Result<u64, Error> {
        match self {
            Plain::Memory(v) => Ok(*v.lock().unwrap_or_else(|p| p.into_inner())),
            Plain::Redis { conn, key } => {
                let v: Option<u64> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(Error::backend)?;
                Ok(v.unwrap_or_default())
            }
        }
    }

    async fn set(&self, value: u64) -> Result<(), Error> {
        match self {
            Plain::Memory(v) => {
                *v.lock().unwrap_or_else(|p| p.into_inner()) = value;
                Ok(())
            }
            Plain::Redis { conn, key } => redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut conn.clone())
                .await
                .map_err(Error::backend),
        }
    }
}

/// The two registers every worker updates in each critical section.
#[derive(Clone)]
pub struct Registers {
    /// Trusting the lock alone.
    pub plain: Plain,
    /// Through a fence gate, with the lease's token on the read and the write.
    pub gate: DynFenceGate,
    /// The gate's resource.
    pub resource: String,
}

impl Registers {
    /// The fenced counter's value (0 before the first write).
    pub async fn fenced_value(&self) -> Result<u64, Error> {
        Ok(self
            .gate
            .read(&self.resource)
            .await?
            .map_or(0, |(_, v)| parse(Some(&v))))
    }
}

fn parse(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or_default()
}

/// What a worker does.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its number in the history.
    pub worker: u32,
    /// The lock key all workers contend for.
    pub key: String,
    /// Each lease's TTL (no keep-alive).
    pub ttl: Duration,
    /// The longest work between the read and the write (uniformly random below it).
    pub work: Duration,
    /// How long one acquisition waits for the key.
    pub wait: Duration,
    /// Stop starting acquisitions at this time ([`now`]'s clock).
    pub until_ns: u64,
}

/// A pause the orchestrator can impose on a task worker inside its next critical
/// section, after its reads: the task analog of SIGSTOP for a process.
#[derive(Clone, Default)]
pub struct Stall(Arc<AtomicU64>);

impl Stall {
    /// The next critical section pauses this long.
    pub fn next(&self, pause: Duration) {
        self.0.store(
            u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    fn take(&self) -> Option<Duration> {
        match self.0.swap(0, Ordering::SeqCst) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

/// Runs the workload until `cfg.until_ns`, passing each event to `emit`.
pub async fn run(
    cfg: WorkerConfig,
    locks: DynLock,
    regs: Registers,
    stall: Stall,
    mut emit: impl FnMut(Event),
) {
    let mut rng = SmallRng::from_os_rng();
    let ttl_ms = u64::try_from(cfg.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut log = |what: What| {
        emit(Event {
            t: now(),
            worker: cfg.worker,
            what,
        })
    };
    let mut acq = 0u64;
    while now() < cfg.until_ns {
        log(What::AcquireInvoke { acq, ttl_ms });
        let opts = Acquire::ttl(cfg.ttl).no_keep_alive().wait(cfg.wait);
        let mut lease = match locks.acquire(&cfg.key, opts).await {
            Ok(lease) => lease,
            Err(error) => {
                // A wait that ran out found the key held: not granted. Anything else
                // (a timed-out request, a lost connection) may have been.
                let what = if matches!(error, Error::Timeout { .. }) || error.is_invalid_input() {
                    What::AcquireFail {
                        acq,
                        error: error.to_string(),
                    }
                } else {
                    What::AcquireUnknown {
                        acq,
                        error: error.to_string(),
                    }
                };
                log(what);
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
                acq += 1;
                continue;
            }
        };
        let token = lease.fence();
        log(What::AcquireOk {
            acq,
            fence: token.get(),
        });
        log(What::Enter { acq });
        let plain = regs.plain.get().await;
        log(What::Read {
            acq,
            register: Register::Plain,
            value: plain.as_ref().ok().copied(),
            stale: false,
        });
        let fenced = regs.gate.read_for_update(&regs.resource, token).await;
        let fenced = match fenced {
            Ok(FencedRead::Current(v)) => Some(parse(v.as_deref())),
            Ok(FencedRead::Stale { .. }) | Err(_) => None,
        };
        log(What::Read {
            acq,
            register: Register::Fenced,
            value: fenced,
            stale: fenced.is_none(),
        });
        let work = rng.random_range(Duration::ZERO..=cfg.work);
        tokio::time::sleep(stall.take().unwrap_or(work)).await;
        if let Ok(value) = plain {
            let outcome = match regs.plain.set(value + 1).await {
                Ok(()) => Outcome::Ok,
                Err(_) => Outcome::Failed,
            };
            log(What::Write {
                acq,
                register: Register::Plain,
                value: value + 1,
                outcome,
            });
        }
        if let Some(value) = fenced {
            let outcome = write_fenced(&regs, token, value + 1).await;
            log(What::Write {
                acq,
                register: Register::Fenced,
                value: value + 1,
                outcome,
            });
        }
        log(What::Exit { acq });
        log(What::ReleaseInvoke { acq });
        let held = lease.release().await.is_ok();
        log(What::ReleaseDone { acq, held });
        acq += 1;
    }
}

async fn write_fenced(regs: &Registers, token: FenceToken, value: u64) -> Outcome {
    match regs
        .gate
        .write(&regs.resource, token, value.to_string().as_bytes())
        .await
    {
        Ok(admission) if admission.is_accepted() => Outcome::Ok,
        Ok(_) => Outcome::Stale,
        Err(_) => Outcome::Failed,
    }
}
