//! The Redis backend against raw redis-rs commands on one multiplexed connection.

use std::{sync::Arc, time::Duration};

use dlock::{Acquire, DynLock, Lock, LockExt, LockKey, OwnerId, RedisConfig, RedisLock};
use dlock_redis::{NodeGrant, RedisNode};
use redis::{Script, aio::MultiplexedConnection};

use crate::measure::*;

/// The raw floor: `SET key owner NX PX`, then a compare-and-delete script.
struct Floor {
    conn: MultiplexedConnection,
    release: Script,
}

/// The floor's compare-and-delete.
const RELEASE_IF_OWNER: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// One raw pair over `conn`: `SET key owner NX PX`, then `release`; whether the
/// SET took the key.
async fn raw_pair(conn: &mut impl redis::aio::ConnectionLike, release: &Script, key: &str) -> bool {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("owner")
        .arg("NX")
        .arg("PX")
        .arg(30_000)
        .query_async(conn)
        .await
        .expect("SET NX PX");
    let _: i64 = release
        .key(key)
        .arg("owner")
        .invoke_async(conn)
        .await
        .expect("EVALSHA");
    set.is_some()
}

impl Floor {
    async fn pair(&self, key: &str) {
        let took = raw_pair(&mut self.conn.clone(), &self.release, key).await;
        assert!(took, "floor key {key} was held");
    }

    /// One round trip: the unit of the handoff target.
    async fn single(&self, key: &str) {
        let _: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .expect("GET");
    }
}

pub(crate) async fn report(config: &Config, url: Option<String>) {
    // Without a URL, a container of the test image (kept alive for the run).
    let _server;
    let url = match url {
        Some(url) => url,
        None => {
            let server = dlock_testkit::start_redis(dlock_testkit::RedisOptions::default()).await;
            let url = format!("redis://127.0.0.1:{}", server.port());
            _server = server;
            url
        }
    };
    let lock: DynLock = Arc::new(RedisLock::connect(&url).await.expect("connect"));
    let client = redis::Client::open(url.as_str()).expect("url");
    let floor = Arc::new(Floor {
        conn: client
            .get_multiplexed_async_connection()
            .await
            .expect("connect"),
        release: Script::new(RELEASE_IF_OWNER),
    });
    let n = config.iterations / 20;
    out!("dlock bench harness — backend: redis ({url}), 2 worker threads\n");

    let mut floor_rates = Vec::new();
    let mut lock_rates = Vec::new();
    for _ in 0..config.rounds {
        floor_rates.push(rate(n, || floor.pair("bench:raw")).await);
        lock_rates.push(rate(n, || acquire_release(&lock, "bench:uncontended")).await);
    }
    let floor_rate = median(&mut floor_rates);
    let lock_rate = median(&mut lock_rates);
    // The second floor: dlock's own scripts through redis-rs, without the lock's
    // machinery (options, lease, metrics, tracking).
    let node = RedisNode::connect(RedisConfig::from_url(&url).expect("url"))
        .await
        .expect("connect");
    let mut script_rates = Vec::new();
    for _ in 0..config.rounds {
        script_rates.push(rate(n, || scripts_pair(&node, "bench:scripts")).await);
    }
    let script_rate = median(&mut script_rates);
    let floor_lat = latencies(n, || floor.pair("bench:raw-lat")).await;
    let single_lat = latencies(n, || floor.single("bench:raw-lat")).await;
    let lock_lat = latencies(n, || acquire_release(&lock, "bench:lat")).await;

    header();
    row("floor: one command (GET)", 0.0, Some(&single_lat), None);
    row(
        "floor: SET NX PX + EVALSHA release",
        floor_rate,
        Some(&floor_lat),
        None,
    );
    row(
        "floor 2: dlock's scripts alone (x raw pair)",
        script_rate,
        None,
        Some(script_rate / floor_rate),
    );
    row(
        "uncontended acquire+release",
        lock_rate,
        Some(&lock_lat),
        Some(lock_rate / floor_rate),
    );
    out!(
        "{:<44} x dlock's scripts alone: {:.2}x",
        "",
        lock_rate / script_rate
    );

    distinct_keys(&lock, config.window, config.rounds, "floor", {
        let floor = floor.clone();
        move |task| {
            let floor = floor.clone();
            async move { floor.pair(&format!("bench:raw:{task}")).await }
        }
    })
    .await;

    server_time_per_pair(&url, &lock, &floor, &node, config.window).await;

    let one_key = contended(&lock, 8, config.window * 2).await;
    row(
        "8 tasks, one key (acquire+release)",
        one_key.rate,
        Some(&one_key.waits),
        Some(one_key.rate / lock_rate),
    );
    let raw_p50 = percentile(&floor_lat, 0.5);
    out!(
        "{:<44} p99 wait / raw pair p50 = {:.1}x; {}",
        "  one key",
        percentile(&one_key.waits, 0.99).as_secs_f64() / raw_p50.as_secs_f64(),
        one_key.fairness()
    );
    report_handoff(
        &lock,
        300,
        Duration::from_millis(10),
        "command",
        &single_lat,
        || floor.single("bench:raw-single"),
    )
    .await;
    idle_clients(&url, &lock, n, 200).await;
    keep_alive_traffic(&url, if config.rounds > 3 { 10_000 } else { 2_000 }).await;
    for clients in [2, 8, 64] {
        out!(
            "\n{clients} separate clients on one key, {:?} each:",
            config.window * 2
        );
        separate_clients("dlock", clients, config.window * 2, |stop| {
            let url = url.clone();
            tokio::spawn(async move {
                let lock: DynLock = Arc::new(RedisLock::connect(&url).await.expect("connect"));
                client_loop(lock, "bench:clients".to_owned(), stop).await
            })
        })
        .await;
        #[cfg(feature = "redlock")]
        separate_clients(
            "rslock 0.10 (one node)",
            clients,
            config.window * 2,
            |stop| crate::redlock::rslock_client(vec![url.clone()], "bench:clients-rs", stop),
        )
        .await;
    }
    scaling("redis", "clients", &[1, 8, 64, 256], config.window, || {
        let url = url.clone();
        async move { Arc::new(RedisLock::connect(&url).await.expect("connect")) as DynLock }
    })
    .await;
    out!(
        "\ntargets: uncontended >= 0.9x floor; 8 tasks >= 0.7x uncontended, p99 wait <= 20x raw pair p50,"
    );
    out!("         fairness <= 2x; 64 tasks >= 0.6x floor; handoff p50 <= 3x one command.");
}

/// Uncontended acquire+release with `idle` more clients connected that wait on
/// nothing: a release must cost the same, and send nothing to them.
async fn idle_clients(url: &str, lock: &DynLock, n: usize, idle: usize) {
    let client = redis::Client::open(url).expect("url");
    let mut probe = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut measure = async |label: &str| {
        let before = server_stats(&mut probe).await.2;
        let r = rate(n, || acquire_release(lock, "bench:idle-clients")).await;
        let sent = server_stats(&mut probe).await.2.saturating_sub(before);
        (label.to_owned(), r, sent as f64 / n as f64)
    };
    let alone = measure("alone").await;
    let mut others = Vec::with_capacity(idle);
    for _ in 0..idle {
        others.push(
            RedisLock::connect(url)
                .await
                .expect("connect an idle client"),
        );
    }
    let crowded = measure("with idle").await;
    for (label, r, bytes) in [&alone, &crowded] {
        out!(
            "{:<44} {:>10.0}/s  server sent {:>7.0} B per acquire+release",
            format!(
                "  uncontended, {label} ({} idle)",
                if label == "alone" { 0 } else { idle }
            ),
            r,
            bytes
        );
    }
    out!(
        "{:<44} {:.2}x the rate alone",
        format!("  with {idle} idle clients"),
        crowded.1 / alone.1
    );
    drop(others);
}

/// One acquire and one release through `RedisNode`: dlock's scripts, nothing else.
async fn scripts_pair(node: &RedisNode, key: &str) {
    let key = LockKey::new(key).expect("key");
    let owner = OwnerId::random();
    let granted = node.acquire(&key, &owner, TTL).await.expect("ACQUIRE");
    assert!(
        matches!(granted, NodeGrant::Granted(_)),
        "scripts floor key was held"
    );
    assert!(node.release(&key, &owner).await.expect("RELEASE"));
}

/// `leases` held with keep-alive by one client, batched (the lock as it is) and one
/// extension per lease (the same lock behind a bulkhead, which does not batch):
/// calls and bytes per second each way.
async fn keep_alive_traffic(url: &str, leases: usize) {
    let ttl = Duration::from_secs(3);
    let window = ttl * 2;
    out!(
        "\nKeep-alive: {leases} leases of one client, TTL {ttl:?}, extended every third; over {window:?}:"
    );
    let client = redis::Client::open(url).expect("url");
    let mut probe = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let redis = RedisLock::connect(url).await.expect("connect");
    let batched: DynLock = Arc::new(redis.clone());
    let bulkhead = dlock::reliability::Bulkhead::new(leases * 2, 0).expect("bulkhead");
    let unbatched: DynLock = Arc::new(dlock::Bulkheaded::new(redis.clone(), bulkhead));
    let batches = redis.keep_alives().expect("Redis batches keep-alive");
    for (name, lock, is_batched) in [
        ("batched", &batched, true),
        ("one call per lease", &unbatched, false),
    ] {
        let mut held = Vec::with_capacity(leases);
        for i in 0..leases {
            let key = format!("bench:keep-alive:{name}:{i}");
            let opts = Acquire::ttl(ttl).keep_alive(1.0 / 3.0);
            held.push(lock.acquire(&key, opts).await.expect("acquire"));
        }
        let (sent, extended) = (batches.batches_sent(), batches.extensions_sent());
        let (cmds, input, output) = server_stats(&mut probe).await;
        tokio::time::sleep(window).await;
        let (cmds2, input2, output2) = server_stats(&mut probe).await;
        let secs = window.as_secs_f64();
        let calls = if is_batched {
            format!(
                "{:.0} calls/s carrying {:.0} extensions/s",
                (batches.batches_sent() - sent) as f64 / secs,
                (batches.extensions_sent() - extended) as f64 / secs
            )
        } else {
            format!("{:.0} calls/s", (cmds2 - cmds) as f64 / secs)
        };
        let lost = held.iter().filter(|l| !l.is_valid()).count();
        out!(
            "  {name:<22} {calls}; server took {:.0} commands/s, {:.0} kB/s in, {:.0} kB/s out; {lost} lost",
            (cmds2 - cmds) as f64 / secs,
            (input2 - input) as f64 / secs / 1000.0,
            (output2 - output) as f64 / secs / 1000.0,
        );
        for mut lease in held {
            let _ = lease.release().await;
        }
    }
}

/// `INFO stats`: commands processed, bytes in, bytes out.
async fn server_stats(conn: &mut MultiplexedConnection) -> (u64, u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("INFO stats");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("total_commands_processed:"),
        field("total_net_input_bytes:"),
        field("total_net_output_bytes:"),
    )
}

/// Where the distinct-keys gap goes: with 64 tasks the server is the bottleneck, so
/// its time per acquire+release (from `INFO commandstats`) sets the rate. For the
/// raw pair, dlock's scripts alone, and the lock.
async fn server_time_per_pair(
    url: &str,
    lock: &DynLock,
    floor: &Arc<Floor>,
    node: &RedisNode,
    window: Duration,
) {
    let client = redis::Client::open(url).expect("url");
    let mut probe = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    out!("Server time per acquire+release, 64 tasks on distinct keys ({window:?} each):");
    let floor = floor.clone();
    server_time(&mut probe, "raw pair", window, move |t| {
        let floor = floor.clone();
        async move { floor.pair(&format!("bench:srv:raw:{t}")).await }
    })
    .await;
    let node = node.clone();
    server_time(&mut probe, "dlock's scripts alone", window, move |t| {
        let node = node.clone();
        async move { scripts_pair(&node, &format!("bench:srv:scripts:{t}")).await }
    })
    .await;
    let lock = lock.clone();
    server_time(&mut probe, "the lock", window, move |t| {
        let lock = lock.clone();
        async move { acquire_release(&lock, &format!("bench:srv:lock:{t}")).await }
    })
    .await;
}

/// `op` on 64 tasks for `window`, then the server's time and commands per call of it.
async fn server_time<F, Fut>(
    probe: &mut MultiplexedConnection,
    label: &str,
    window: Duration,
    op: F,
) where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    reset_command_stats(probe).await;
    let rate = many_tasks(64, window, op).await.rate;
    print_command_stats(probe, label, rate, window).await;
}

async fn reset_command_stats(conn: &mut MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("CONFIG RESETSTAT");
}

/// The server's time and commands per pair since the last reset, for `rate` pairs a
/// second over `window`, from `cmdstat_<name>:calls=N,usec=U,...` (INFO's and
/// CONFIG's own left out).
async fn print_command_stats(
    conn: &mut MultiplexedConnection,
    label: &str,
    rate: f64,
    window: Duration,
) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let (mut calls, mut usec) = (0u64, 0u64);
    let mut per_command = Vec::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        if matches!(name, "info" | "config|resetstat" | "config") {
            continue;
        }
        let field = |f: &str| {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(f))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        calls += field("calls=") as u64;
        usec += field("usec=") as u64;
        per_command.push(format!("{name} {:.1} µs", field("usec_per_call=")));
    }
    let pairs = (rate * window.as_secs_f64()).max(1.0);
    out!(
        "  {label:<30} {rate:>9.0}/s  server {:>5.1} µs per pair ({:.1} commands; {})",
        usec as f64 / pairs,
        calls as f64 / pairs,
        per_command.join(", ")
    );
}

/// CPU per acquire+release, 64 tasks on distinct keys, for a server on this machine
/// (its `process_id` read from `INFO server`): the client's (this process) and the
/// server's, from /proc, for the raw pair over a plain connection and over the
/// connection manager the lock uses, dlock's scripts alone, and the lock.
pub(crate) async fn cpu_probe(url: &str, window: Duration) {
    let client = redis::Client::open(url).expect("url");
    let mut plain = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut plain)
        .await
        .expect("INFO");
    let pid: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id");
    let release = Script::new(RELEASE_IF_OWNER);
    let managed = redis::aio::ConnectionManager::new_with_config(
        client.clone(),
        redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2))),
    )
    .await
    .expect("connect");
    let lock: DynLock = Arc::new(RedisLock::connect(url).await.expect("connect"));
    let node = RedisNode::connect(RedisConfig::from_url(url).expect("url"))
        .await
        .expect("connect");
    out!("CPU per acquire+release, 64 tasks on distinct keys ({window:?} each):");
    raw_pairs_cpu(pid, window, plain.clone(), &release)
        .await
        .print("raw pair, plain connection");
    raw_pairs_cpu(pid, window, managed, &release)
        .await
        .print("raw pair, connection manager");
    let ran = cpu_of(pid, window, move |task| {
        let node = node.clone();
        async move { scripts_pair(&node, &format!("bench:cpu-scripts:{task}")).await }
    })
    .await;
    ran.print("dlock's scripts alone");
    let ran = cpu_of(pid, window, move |task| {
        let lock = lock.clone();
        async move { acquire_release(&lock, &format!("bench:cpu-lock:{task}")).await }
    })
    .await;
    ran.print("the lock");
}

/// [`cpu_of`] the raw pair over `conn` (shared by the 64 tasks, as the floor's is).
async fn raw_pairs_cpu<C>(pid: u32, window: Duration, conn: C, release: &Script) -> CpuRun
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let release = release.clone();
    cpu_of(pid, window, move |task| {
        let (mut conn, release) = (conn.clone(), release.clone());
        async move {
            raw_pair(&mut conn, &release, &format!("bench:cpu:{task}")).await;
        }
    })
    .await
}

struct CpuRun {
    rate: f64,
    client_us: f64,
    server_us: f64,
}

impl CpuRun {
    fn print(&self, name: &str) {
        out!(
            "  {name:<30} {:>7.0}/s  client {:>5.1} µs  server {:>5.1} µs CPU per pair",
            self.rate,
            self.client_us,
            self.server_us
        );
    }
}

async fn cpu_of<F, Fut>(pid: u32, window: Duration, op: F) -> CpuRun
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (client0, server0) = (cpu_ticks("self"), cpu_ticks(&pid.to_string()));
    let start = std::time::Instant::now();
    let rate = many_tasks(64, window, op).await.rate;
    let pairs = rate * start.elapsed().as_secs_f64();
    let (client1, server1) = (cpu_ticks("self"), cpu_ticks(&pid.to_string()));
    // Clock ticks of 10 ms (USER_HZ 100) in µs, per pair.
    let per_pair = |ticks: u64| ticks as f64 * 10_000.0 / pairs;
    CpuRun {
        rate,
        client_us: per_pair(client1 - client0),
        server_us: per_pair(server1 - server0),
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
