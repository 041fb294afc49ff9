//! Scenarios: a backend, a fault, workers, and the run that puts them together.
//!
//! The lock is the backend under test; the registers live on a store the fault
//! does not touch (in process for memory, a separate Redis otherwise), so a lost
//! update is the lock's and the fencing's doing, never the store losing data.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use dlock::{
    DynFenceGate, DynLock, MemoryFenceGate, MemoryLock, OwnerId, RedisFenceGate, RedisLock,
};
use dlock_testkit::{
    EtcdCluster, Link, Proxy, RedisOptions, Server, free_port, start_etcd, start_redis,
};
use tokio::io::AsyncBufReadExt;

use crate::{
    check::{Report, check},
    history::{Event, What, now},
    worker::{self, Plain, Registers, Stall, WorkerConfig},
};

/// The backend under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In process: workers are tasks.
    Memory,
    /// One Redis: workers are processes.
    Redis,
    /// etcd: workers are processes.
    Etcd,
    /// Redlock over three Redis servers, delayed restarts on: workers are processes.
    Redlock,
    /// The same with delayed restarts off.
    RedlockUndelayed,
}

/// The fault, injected again and again through the middle half of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A holder paused past its TTL inside its critical section: SIGSTOP and
    /// SIGCONT of a worker process (a task's sleep on memory).
    ClientPause,
    /// The server frozen (`docker pause`) for longer than the TTL.
    ServerPause,
    /// The server (Redlock: one of its nodes) killed and started again at once,
    /// without persistence: its locks are gone, while their holders may still be
    /// working.
    ServerRestart,
    /// The same, started again only after more than the TTL.
    ServerRestartLate,
    /// The server killed and restarted with its data (AOF, fsync always).
    ServerRestartPersistent,
    /// The link between workers and server blackholed, then restored.
    Blackhole,
    /// Every chunk across the link held for two TTLs, then passing at once again.
    LinkDelay,
    /// Every connection across the link closed at once.
    LinkReset,
    /// etcd: the leader of a three-node cluster killed.
    LeaderKill,
    /// Redlock: one node's clock running five times as fast, as its keys see it:
    /// every lock key's remaining TTL on that node shrinks at five times the real
    /// rate, so it expires early, within a worker's critical section (a clock that
    /// jumps or runs fast, the hazard Redlock's analysis names). Emulated with the
    /// node's own commands: libfaketime aborts Debian's redis-server 7.0.
    ClockFast,
}

/// One tick of a clock running fast on a Redis node: every lock key loses
/// ARGV[1] ms more of its TTL, and one with no more than that left is deleted (it
/// would have expired). ARGV[2]: the lock keys' pattern. Returns how many expired.
const CLOCK_TICK: &str = r#"
local cursor, expired, extra = '0', 0, tonumber(ARGV[1])
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', 200)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local left = redis.call('PTTL', key)
    if left > 0 then
      if left <= extra then
        redis.call('DEL', key)
        expired = expired + 1
      else
        redis.call('PEXPIRE', key, left - extra)
      end
    end
  end
until cursor == '0'
return expired
"#;

impl Fault {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ClientPause => "client paused past its TTL",
            Fault::ServerPause => "server paused",
            Fault::ServerRestart => "server killed and restarted empty",
            Fault::ServerRestartLate => "server killed, restarted empty after 2 TTLs",
            Fault::ServerRestartPersistent => "server killed and restarted with its data",
            Fault::LinkDelay => "link delayed by 2 TTLs",
            Fault::LinkReset => "link reset",
            Fault::Blackhole => "link blackholed",
            Fault::LeaderKill => "leader killed (3 nodes)",
            Fault::ClockFast => "one node's clock 5x fast",
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// What is checked.
    pub backend: Backend,
    /// What is done to it.
    pub fault: Fault,
    /// How many workers.
    pub workers: u32,
    /// How long the workload runs.
    pub run: Duration,
    /// The `dlock-checker` binary, for process workers.
    pub worker_exe: PathBuf,
}

/// A run's outcome.
#[derive(Clone, Debug)]
pub struct Row {
    /// The plan it ran.
    pub plan: Plan,
    /// The lease TTL used.
    pub ttl: Duration,
    /// What the checks found.
    pub report: Report,
    /// Whether the fault visibly did something (a row whose fault did nothing
    /// proves nothing).
    pub fault_took_effect: bool,
}

impl Backend {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Etcd => "etcd",
            Backend::Redlock => "redlock (3 nodes)",
            Backend::RedlockUndelayed => "redlock, no delayed restarts",
        }
    }

    fn ttl(self) -> Duration {
        match self {
            Backend::Memory => Duration::from_millis(200),
            Backend::Redis | Backend::Redlock | Backend::RedlockUndelayed => {
                Duration::from_millis(500)
            }
            // etcd's TTLs are whole seconds, at least 2.
            Backend::Etcd => Duration::from_secs(2),
        }
    }
}

/// The servers of a run, kept alive (and removed when dropped).
struct Setup {
    url: String,
    backend_server: Option<Server>,
    /// Redlock's nodes; the fault hits the second.
    nodes: Vec<Server>,
    cluster: Option<EtcdCluster>,
    proxy: Option<Proxy>,
    store_url: Option<String>,
}

/// Runs `plan` and checks its history.
pub async fn run(plan: Plan) -> Row {
    let ttl = plan.backend.ttl();
    let setup = set_up(&plan).await;
    let key = format!("dlock-checker:{}", OwnerId::random());
    let resource = format!("dlock-checker:register:{}", OwnerId::random());
    let start = now();
    let until_ns = start + u64::try_from(plan.run.as_nanos()).unwrap_or(u64::MAX);
    let cfg = |worker| WorkerConfig {
        worker,
        key: key.clone(),
        ttl,
        work: ttl / 4,
        wait: ttl * 4,
        until_ns,
    };
    let history = Arc::new(Mutex::new(Vec::<Event>::new()));
    let record = {
        let history = Arc::clone(&history);
        move |e: Event| history.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    };
    let registers = match plan.backend {
        Backend::Memory => {
            let locks: DynLock = Arc::new(MemoryLock::new());
            let gate: DynFenceGate = Arc::new(MemoryFenceGate::new());
            run_tasks(&plan, ttl, cfg, locks, gate, &resource, &record).await
        }
        Backend::Redis | Backend::Etcd | Backend::Redlock | Backend::RedlockUndelayed => {
            let store_url = setup.store_url.clone().expect("a register store");
            let regs = store_registers(&store_url, &resource).await;
            let mut children = Vec::new();
            let (enter_tx, mut enter_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            for w in 0..plan.workers {
                let mut child = tokio::process::Command::new(&plan.worker_exe)
                    .arg("worker")
                    .args(["--url", &setup.url])
                    .args(["--store", &store_url])
                    .args(["--key", &key, "--resource", &resource])
                    .args(["--worker", &w.to_string()])
                    .args(["--ttl-ms", &ttl.as_millis().to_string()])
                    .args(["--until-ns", &until_ns.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start a worker process");
                let stdout = child.stdout.take().expect("worker stdout");
                let (record, enter_tx) = (record.clone(), enter_tx.clone());
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Ok(event) = serde_json::from_str::<Event>(&line) {
                            if matches!(event.what, What::Enter { .. }) {
                                let _ = enter_tx.send(event.worker);
                            }
                            record(event);
                        }
                    }
                });
                children.push(child);
            }
            // The fault, again and again from a quarter of the run to three quarters.
            tokio::time::sleep(plan.run / 4).await;
            let stop_at = tokio::time::Instant::now() + plan.run / 2;
            let mut round = 0;
            loop {
                inject(&plan, &setup, ttl, &children, round, &mut enter_rx, &record).await;
                round += 1;
                let rest = ttl * 4;
                if tokio::time::Instant::now() + rest >= stop_at {
                    break;
                }
                tokio::time::sleep(rest).await;
            }
            for mut child in children {
                let _ = tokio::time::timeout(plan.run + ttl * 10, child.wait()).await;
                let _ = child.kill().await;
            }
            regs
        }
    };
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let row = finish(plan, ttl, &history, &registers).await;
    drop(setup);
    row
}

/// Task workers on one in-process lock; the fault is a stall of a worker inside
/// its next critical section, repeated through the middle half of the run.
async fn run_tasks(
    plan: &Plan,
    ttl: Duration,
    cfg: impl Fn(u32) -> WorkerConfig,
    locks: DynLock,
    gate: DynFenceGate,
    resource: &str,
    record: &(impl Fn(Event) + Clone + Send + 'static),
) -> Registers {
    let regs = Registers {
        plain: Plain::Memory(Arc::default()),
        gate,
        resource: resource.to_owned(),
    };
    let stalls: Vec<Stall> = (0..plan.workers).map(|_| Stall::default()).collect();
    let mut tasks = Vec::new();
    for w in 0..plan.workers {
        let (locks, regs, stall, record) = (
            locks.clone(),
            regs.clone(),
            stalls[w as usize].clone(),
            record.clone(),
        );
        tasks.push(tokio::spawn(worker::run(
            cfg(w),
            locks,
            regs,
            stall,
            record,
        )));
    }
    // The stall, again and again from a quarter of the run to three quarters, each
    // time in another worker.
    tokio::time::sleep(plan.run / 4).await;
    let stop_at = tokio::time::Instant::now() + plan.run / 2;
    let pause = ttl.mul_f64(2.5);
    let mut victim = 0;
    loop {
        fault_event(record, plan.fault, true);
        stalls[victim % stalls.len()].next(pause);
        tokio::time::sleep(pause).await;
        fault_event(record, plan.fault, false);
        victim += 1;
        if tokio::time::Instant::now() + pause * 2 >= stop_at {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    for task in tasks {
        let _ = task.await;
    }
    regs
}

/// Runs `plan` on an in-process `locks` and `gate` of the caller's choosing (a
/// backend broken on purpose, to show the checks can fail).
pub async fn run_with(plan: Plan, locks: DynLock, gate: DynFenceGate) -> Row {
    let ttl = plan.backend.ttl();
    let key = format!("dlock-checker:{}", OwnerId::random());
    let until_ns = now() + u64::try_from(plan.run.as_nanos()).unwrap_or(u64::MAX);
    let cfg = |worker| WorkerConfig {
        worker,
        key: key.clone(),
        ttl,
        work: ttl / 4,
        wait: ttl * 4,
        until_ns,
    };
    let history = Arc::new(Mutex::new(Vec::<Event>::new()));
    let record = {
        let history = Arc::clone(&history);
        move |e: Event| history.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    };
    let regs = run_tasks(&plan, ttl, cfg, locks, gate, "register", &record).await;
    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    finish(plan, ttl, &history, &regs).await
}

/// Reads the registers' final values and checks the history.
async fn finish(plan: Plan, ttl: Duration, history: &[Event], regs: &Registers) -> Row {
    let final_plain = regs.plain.get().await.expect("read the plain register");
    let final_fenced = regs.fenced_value().await.expect("read the fenced register");
    if let Some(path) = std::env::var_os("DLOCK_CHECKER_HISTORY") {
        // The raw history, one JSON line per event, for a closer look.
        let lines: Vec<String> = history
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .collect();
        let _ = std::fs::write(path, lines.join("\n") + "\n");
    }
    let report = check(history, final_plain, final_fenced);
    let fault_took_effect = match plan.fault {
        Fault::ClientPause => report.outlived_leases > 0,
        // Failures, or no grant for longer than a TTL (the fault lasts 2.5 TTLs or
        // more): waiters that wait through it fail nothing.
        Fault::ServerPause | Fault::Blackhole => {
            report.failures_during_faults > 0 || report.longest_stall_ms >= ttl.as_secs_f64() * 1e3
        }
        Fault::LinkDelay => report.failures_during_faults > 0 || report.outlived_leases > 0,
        Fault::ServerRestart
        | Fault::ServerRestartLate
        | Fault::ServerRestartPersistent
        | Fault::LinkReset
        | Fault::LeaderKill
        | Fault::ClockFast => !report.observed.is_empty(),
    };
    Row {
        plan,
        ttl,
        report,
        fault_took_effect,
    }
}

fn fault_event(record: &impl Fn(Event), fault: Fault, started: bool) {
    record(Event {
        t: now(),
        worker: u32::MAX,
        what: What::Fault {
            fault: fault.name().into(),
            started,
        },
    });
}

fn observed(record: &impl Fn(Event), what: String) {
    record(Event {
        t: now(),
        worker: u32::MAX,
        what: What::Observed { what },
    });
}

async fn set_up(plan: &Plan) -> Setup {
    let mut setup = Setup {
        url: String::new(),
        backend_server: None,
        nodes: Vec::new(),
        cluster: None,
        proxy: None,
        store_url: None,
    };
    match plan.backend {
        Backend::Memory => {}
        Backend::Redis => {
            // A dedicated server on a fixed port, so a restart keeps its address.
            let port = free_port();
            let persistence: &[&str] = if plan.fault == Fault::ServerRestartPersistent {
                &[
                    "--dir",
                    "/data",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ]
            } else {
                &["--save", "", "--appendonly", "no"]
            };
            let server = start_redis(RedisOptions {
                args: persistence.iter().map(|a| a.to_string()).collect(),
                host_port: Some(port),
                ..RedisOptions::default()
            })
            .await;
            let proxied = matches!(
                plan.fault,
                Fault::Blackhole | Fault::LinkDelay | Fault::LinkReset
            );
            let port = if proxied {
                let proxy = Proxy::start(port).await;
                let port = proxy.port();
                setup.proxy = Some(proxy);
                port
            } else {
                port
            };
            setup.url = format!("redis://127.0.0.1:{port}");
            setup.backend_server = Some(server);
        }
        Backend::Redlock | Backend::RedlockUndelayed => {
            let starts = (0..3).map(|_| async {
                let port = free_port();
                let server = start_redis(RedisOptions::volatile_on(port)).await;
                (server, format!("127.0.0.1:{port}"))
            });
            let (nodes, hosts): (Vec<Server>, Vec<String>) =
                futures::future::join_all(starts).await.into_iter().unzip();
            let delayed = if plan.backend == Backend::Redlock {
                "on"
            } else {
                "off"
            };
            setup.url = format!("redlock://{}?delayed_restarts={delayed}", hosts.join(","));
            setup.nodes = nodes;
        }
        Backend::Etcd if plan.fault == Fault::LeaderKill => {
            let cluster = EtcdCluster::start(3).await;
            setup.url = cluster.url();
            setup.cluster = Some(cluster);
        }
        Backend::Etcd => {
            let server = start_etcd().await;
            let port = if plan.fault == Fault::Blackhole {
                let proxy = Proxy::start(server.port()).await;
                let port = proxy.port();
                setup.proxy = Some(proxy);
                port
            } else {
                server.port()
            };
            setup.url = format!("etcd://127.0.0.1:{port}");
            setup.backend_server = Some(server);
        }
    }
    if plan.backend != Backend::Memory {
        setup.store_url = Some(dlock_testkit::shared_redis_url().await);
    }
    setup
}

/// The registers on the store: a plain key, and a Redis fence gate.
pub async fn store_registers(store_url: &str, resource: &str) -> Registers {
    let client = redis::Client::open(store_url).expect("store url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the register store");
    let store = RedisLock::connect(store_url)
        .await
        .expect("connect to the register store");
    let gate: DynFenceGate = Arc::new(RedisFenceGate::new(&store));
    Registers {
        plain: Plain::Redis {
            conn,
            key: format!("{resource}:plain"),
        },
        gate,
        resource: resource.to_owned(),
    }
}

/// Injects the plan's fault into a run of process workers.
async fn inject(
    plan: &Plan,
    setup: &Setup,
    ttl: Duration,
    children: &[tokio::process::Child],
    round: usize,
    entered: &mut tokio::sync::mpsc::UnboundedReceiver<u32>,
    record: &impl Fn(Event),
) {
    // Longer than the TTL, and than a request's timeout, so the fault is felt.
    let pause = ttl.mul_f64(2.5).max(Duration::from_secs(3));
    match plan.fault {
        Fault::ClientPause => {
            // Stop a worker (another each round) inside a critical section: right
            // after it enters one.
            let victim = round % children.len();
            while entered.try_recv().is_ok() {}
            let deadline = tokio::time::Instant::now() + plan.run / 4;
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(w)) = tokio::time::timeout(ttl, entered.recv()).await
                    && w as usize == victim
                {
                    break;
                }
            }
            let pid = children[victim].id().expect("the worker runs");
            let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or_default())
                .expect("a pid");
            fault_event(record, plan.fault, true);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::STOP);
            tokio::time::sleep(ttl.mul_f64(2.5)).await;
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            fault_event(record, plan.fault, false);
        }
        Fault::ServerPause => {
            let server = setup.backend_server.as_ref().expect("a server");
            fault_event(record, plan.fault, true);
            server.pause().await;
            tokio::time::sleep(pause).await;
            server.unpause().await;
            fault_event(record, plan.fault, false);
        }
        Fault::ServerRestart | Fault::ServerRestartLate | Fault::ServerRestartPersistent => {
            let server = setup
                .backend_server
                .as_ref()
                .or(setup.nodes.get(1))
                .expect("a server");
            fault_event(record, plan.fault, true);
            server.kill().await;
            if plan.fault == Fault::ServerRestartLate {
                tokio::time::sleep(ttl * 2).await;
            }
            server.start_again().await;
            fault_event(record, plan.fault, false);
            observed(record, "killed and started again".into());
        }
        Fault::LinkDelay => {
            let proxy = setup.proxy.as_ref().expect("a proxy");
            fault_event(record, plan.fault, true);
            proxy.set(Link::Delay(ttl * 2));
            tokio::time::sleep(pause).await;
            proxy.set(Link::Pass);
            fault_event(record, plan.fault, false);
        }
        Fault::LinkReset => {
            let proxy = setup.proxy.as_ref().expect("a proxy");
            fault_event(record, plan.fault, true);
            let closed = proxy.reset();
            fault_event(record, plan.fault, false);
            if closed > 0 {
                observed(record, format!("{closed} open connections reset"));
            }
        }
        Fault::Blackhole => {
            let proxy = setup.proxy.as_ref().expect("a proxy");
            fault_event(record, plan.fault, true);
            proxy.set(Link::Blackhole);
            tokio::time::sleep(pause).await;
            proxy.set(Link::Pass);
            fault_event(record, plan.fault, false);
        }
        Fault::ClockFast => {
            // On the second node, as the restart fault picks.
            let node = setup.nodes.get(1).expect("a Redlock node");
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", node.port()))
                .expect("node url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to the node");
            let tick = ttl / 20;
            let script = redis::Script::new(CLOCK_TICK);
            let mut expired = 0i64;
            fault_event(record, plan.fault, true);
            let end = tokio::time::Instant::now() + pause;
            while tokio::time::Instant::now() < end {
                tokio::time::sleep(tick).await;
                // Each tick of real time takes five off every TTL: four extra.
                match script
                    .arg(u64::try_from((tick * 4).as_millis()).unwrap_or(u64::MAX))
                    .arg("dlock:v1:lock:*")
                    .invoke_async::<i64>(&mut conn)
                    .await
                {
                    Ok(n) => expired += n,
                    Err(e) => eprintln!("clock tick on the node failed: {e}"),
                }
            }
            fault_event(record, plan.fault, false);
            if expired > 0 {
                // One fixed line per round, so the table counts the rounds it bit.
                observed(record, "lock keys expired early on the fast node".into());
                eprintln!("clock-fast round {round}: {expired} lock keys expired early");
            }
        }
        Fault::LeaderKill => {
            let cluster = setup.cluster.as_ref().expect("a cluster");
            let leader = cluster
                .leader(Duration::from_secs(10))
                .await
                .expect("a leader");
            fault_event(record, plan.fault, true);
            cluster.member(leader).kill().await;
            let next = cluster.leader(Duration::from_secs(20)).await;
            fault_event(record, plan.fault, false);
            if let Some(next) = next.filter(|&n| n != leader) {
                observed(
                    record,
                    format!("leader n{leader} killed, n{next} took over"),
                );
            }
        }
    }
}
