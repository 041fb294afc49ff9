//! The Redis backend against raw redis-rs commands on one multiplexed connection.

use std::{sync::Arc, time::Duration};

use dlock::{DynLock, RedisLock};
use redis::{Script, aio::MultiplexedConnection};

use crate::measure::*;

/// The raw floor: `SET key owner NX PX`, then a compare-and-delete script.
struct Floor {
    conn: MultiplexedConnection,
    release: Script,
}

impl Floor {
    async fn pair(&self, key: &str) {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg("owner")
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut conn)
            .await
            .expect("SET NX PX");
        assert!(set.is_some(), "floor key {key} was held");
        let _: i64 = self
            .release
            .key(key)
            .arg("owner")
            .invoke_async(&mut conn)
            .await
            .expect("EVALSHA");
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
        release: Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        ),
    });
    let n = config.iterations / 20;
    println!("dlock bench harness — backend: redis ({url}), 2 worker threads\n");

    let mut floor_rates = Vec::new();
    let mut lock_rates = Vec::new();
    for _ in 0..config.rounds {
        floor_rates.push(rate(n, || floor.pair("bench:raw")).await);
        lock_rates.push(rate(n, || acquire_release(&lock, "bench:uncontended")).await);
    }
    let floor_rate = median(&mut floor_rates);
    let lock_rate = median(&mut lock_rates);
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
        "uncontended acquire+release",
        lock_rate,
        Some(&lock_lat),
        Some(lock_rate / floor_rate),
    );

    distinct_keys(&lock, config.window, config.rounds, "floor", {
        let floor = floor.clone();
        move |task| {
            let floor = floor.clone();
            async move { floor.pair(&format!("bench:raw:{task}")).await }
        }
    })
    .await;

    let one_key = contended(&lock, 8, config.window * 2).await;
    row(
        "8 tasks, one key (acquire+release)",
        one_key.rate,
        Some(&one_key.waits),
        Some(one_key.rate / lock_rate),
    );
    let raw_p50 = percentile(&floor_lat, 0.5);
    println!(
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
    for clients in [2, 8, 64] {
        println!(
            "\n{clients} separate clients on one key, {:?} each:",
            config.window * 2
        );
        separate_clients("dlock", clients, config.window * 2, |stop| {
            let url = url.clone();
            tokio::spawn(async move {
                let lock = RedisLock::connect(&url).await.expect("connect");
                let mut waits = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = std::time::Instant::now();
                    let opts =
                        dlock::Acquire::ttl(Duration::from_secs(30)).wait(Duration::from_secs(5));
                    if let Ok(mut lease) =
                        dlock::LockExt::acquire(&lock, "bench:clients", opts).await
                    {
                        waits.push(t.elapsed());
                        let _ = lease.release().await;
                    }
                }
                waits
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
    println!(
        "\ntargets: uncontended >= 0.9x floor; 8 tasks >= 0.7x uncontended, p99 wait <= 20x raw pair p50,"
    );
    println!("         fairness <= 2x; 64 tasks >= 0.6x floor; handoff p50 <= 3x one command.");
}

/// What the server sends per release, read from `INFO stats`.
async fn output_bytes(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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
        let before = output_bytes(&mut probe).await;
        let r = rate(n, || acquire_release(lock, "bench:idle-clients")).await;
        let sent = output_bytes(&mut probe).await.saturating_sub(before);
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
        println!(
            "{:<44} {:>10.0}/s  server sent {:>7.0} B per acquire+release",
            format!(
                "  uncontended, {label} ({} idle)",
                if label == "alone" { 0 } else { idle }
            ),
            r,
            bytes
        );
    }
    println!(
        "{:<44} {:.2}x the rate alone",
        format!("  with {idle} idle clients"),
        crowded.1 / alone.1
    );
    drop(others);
}
