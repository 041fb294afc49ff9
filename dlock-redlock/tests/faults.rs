//! Redlock under faults, against real Redis servers in containers: a node frozen,
//! two of three stopped, a node restarted empty while the lock is held.

use std::time::Duration;

use dlock_core::{Acquire, Error, FenceGate, FenceToken, LockExt, OwnerId};
use dlock_redlock::{RedlockConfig, RedlockLock};
use dlock_testkit::{RedisOptions, Server, free_port, start_redis};
use tokio::time::Instant;

fn key(name: &str) -> String {
    format!("dlock-redlock-faults:{name}:{}", OwnerId::random())
}

/// `n` dedicated servers without persistence, each on a fixed port so a restart
/// keeps its address.
async fn nodes(n: usize) -> (Vec<Server>, Vec<String>) {
    nodes_in(n, false).await
}

/// As [`nodes`]; `host_network`: in the host's network, with no port proxy.
async fn nodes_in(n: usize, host_network: bool) -> (Vec<Server>, Vec<String>) {
    let starts = (0..n).map(|_| async move {
        let port = free_port();
        let server = start_redis(RedisOptions {
            host_network,
            ..RedisOptions::volatile_on(port)
        })
        .await;
        (server, format!("redis://127.0.0.1:{port}"))
    });
    futures::future::join_all(starts).await.into_iter().unzip()
}

async fn connect(
    urls: &[String],
    configure: impl Fn(dlock_redlock::RedlockConfigBuilder) -> dlock_redlock::RedlockConfigBuilder,
) -> RedlockLock {
    let mut builder = RedlockConfig::builder();
    for url in urls {
        builder = builder.node_url(url.as_str());
    }
    RedlockLock::connect_with(configure(builder).build().expect("config"))
        .await
        .expect("connect")
}

/// Runs one command on the server at `url`, behind the clients' backs.
async fn raw(url: &str, args: &[&str]) {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.expect("command");
}

/// Waits until the server at `url` answers a PING (a restarted one takes a moment).
async fn answers(url: &str) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let client = redis::Client::open(url).expect("url");
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
            if pong.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < give_up, "{url} never answered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `key` is held on the server at `url`, read behind the client's back.
async fn held_on(url: &str, key: &str) -> bool {
    let mut raw = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("dlock:v1:lock:{{{key}}}"))
        .query_async(&mut raw)
        .await
        .expect("exists");
    exists == 1
}

/// One acquire+release, timed.
async fn cycle(locks: &RedlockLock, k: &str) -> Duration {
    let started = Instant::now();
    let mut lease = locks
        .acquire(k, Acquire::ttl(Duration::from_secs(5)))
        .await
        .expect("acquire with a node cut off");
    lease.release().await.expect("release");
    started.elapsed()
}

/// How a test cuts node 0 off and brings it back.
enum Cut {
    /// `docker pause` / `unpause`: the node's process frozen.
    Freeze,
    /// The client's link to it blackholed, then passing again.
    Blackhole(dlock_testkit::Proxy),
}

impl Cut {
    async fn start(&self, server: &Server) {
        match self {
            Cut::Freeze => server.pause().await,
            Cut::Blackhole(proxy) => proxy.set(dlock_testkit::Link::Blackhole),
        }
    }
    async fn end(&self, server: &Server) {
        match self {
            Cut::Freeze => server.unpause().await,
            Cut::Blackhole(proxy) => proxy.set(dlock_testkit::Link::Pass),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_costs_no_waiting_once_its_breaker_opens_and_leaves_no_ghost() {
    let (servers, urls) = nodes(3).await;
    cut_off_and_back(&servers, &urls, urls.clone(), Cut::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_costs_no_waiting_once_its_breaker_opens_and_leaves_no_ghost() {
    let (servers, urls) = nodes(3).await;
    // The client reaches node 0 through the proxy; checks read it directly.
    let port: u16 = urls[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let proxy = dlock_testkit::Proxy::start(port).await;
    let mut through = urls.clone();
    through[0] = format!("redis://127.0.0.1:{}", proxy.port());
    cut_off_and_back(&servers, &urls, through, Cut::Blackhole(proxy)).await;
}

/// Node 0 cut off: acquisitions go on with the other two; once its breaker opens,
/// p50 is back near normal; once it is back, no grant queued for it outlives its
/// TTL, and it takes part again.
async fn cut_off_and_back(servers: &[Server], urls: &[String], client_urls: Vec<String>, cut: Cut) {
    let locks = connect(&client_urls, |b| b).await;
    let k = key("frozen");
    let healthy: Vec<Duration> = {
        let mut times = Vec::new();
        for _ in 0..10 {
            times.push(cycle(&locks, &k).await);
        }
        times
    };
    cut.start(&servers[0]).await;
    // Acquisitions go on with two of three; the first ones wait out the per-node
    // timeout until the breaker opens.
    let mut frozen = Vec::new();
    for _ in 0..30 {
        frozen.push(cycle(&locks, &k).await);
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let (before, after) = (median(&healthy), median(&frozen[20..]));
    println!("acquire+release p50: healthy {before:?}, one node cut off (breaker open) {after:?}");
    assert!(
        after <= before * 2 + Duration::from_millis(10),
        "with the breaker open, p50 {after:?} against {before:?} healthy"
    );

    // A grant the frozen node queued runs when it thaws; it must not outlive a TTL.
    let ghost = key("ghost");
    let ttl = Duration::from_secs(2);
    let mut lease = locks
        .acquire(&ghost, Acquire::ttl(ttl))
        .await
        .expect("acquire");
    lease.release().await.expect("release");
    cut.end(&servers[0]).await;
    let thawed = Instant::now();
    let deadline = thawed + ttl + Duration::from_millis(500);
    while held_on(&urls[0], &ghost).await {
        assert!(
            Instant::now() < deadline,
            "a ghost key outlived its TTL after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node rejoins: once its breaker closes, it holds keys again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rejoined = key("rejoined");
    let mut seen = false;
    for _ in 0..20 {
        let lease = locks
            .acquire(&rejoined, Acquire::ttl(Duration::from_secs(5)))
            .await
            .expect("acquire");
        seen = held_on(&urls[0], &rejoined).await;
        drop(lease);
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "the thawed node never took part again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_stopped_is_quorum_unavailable_at_once() {
    let (servers, urls) = nodes(3).await;
    let locks = connect(&urls, |b| b.per_node_timeout(Duration::from_millis(100))).await;
    servers[1].stop(Duration::ZERO).await;
    servers[2].stop(Duration::ZERO).await;
    let started = Instant::now();
    let outcome = locks
        .acquire(
            &key("down"),
            Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(30)),
        )
        .await;
    let took = started.elapsed();
    match outcome {
        Err(Error::QuorumUnavailable { needed, failures }) => {
            assert_eq!(needed, 2);
            assert_eq!(failures.len(), 2, "{failures:?}");
        }
        other => panic!("expected QuorumUnavailable, got {other:?}"),
    }
    // Within the per-node timeout plus a margin, never the caller's 30 s wait.
    assert!(
        took < Duration::from_millis(100) + Duration::from_millis(900),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_slow_is_waited_through_not_quorum_unavailable() {
    // Frozen nodes time out rather than refuse: slow, not known down. A waiting
    // acquisition retries through it, as through any transient outage, and is
    // granted once they answer again (before: QuorumUnavailable at the first try).
    let (servers, urls) = nodes(3).await;
    let locks = connect(&urls, |b| b.per_node_timeout(Duration::from_millis(100))).await;
    servers[1].pause().await;
    servers[2].pause().await;
    let k = key("slow");
    let waiting = {
        let (locks, k) = (locks.clone(), k.clone());
        tokio::spawn(async move {
            locks
                .acquire(
                    &k,
                    Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(20)),
                )
                .await
        })
    };
    // Long enough for several attempts, short enough for no breaker to open: a
    // breaker needs 4 failed calls in its window.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !waiting.is_finished(),
        "the wait ended early: {:?}",
        waiting.await
    );
    servers[1].unpause().await;
    servers[2].unpause().await;
    let granted = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("still waiting after the nodes answered again")
        .expect("task");
    let mut lease = granted.expect("granted once the nodes answer");
    lease.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_a_majority_did_not_answer_is_in_doubt_not_lost() {
    // Two of three nodes frozen with their breakers open: the release hears only
    // node 0. Whether the key was ours on the others is unknown, so the release is
    // a retryable error that ends the lease's validity, never "lost" (before:
    // LeaseLost, as if the lease had been gone).
    let (servers, urls) = nodes(3).await;
    let locks = connect(&urls, |b| b.per_node_timeout(Duration::from_millis(100))).await;
    let mut lease = locks
        .acquire(
            &key("doubt"),
            Acquire::ttl(Duration::from_secs(30)).no_keep_alive(),
        )
        .await
        .expect("acquire");
    servers[1].pause().await;
    servers[2].pause().await;
    // Failed votes on other keys open the frozen nodes' breakers.
    for _ in 0..6 {
        let _ = locks
            .try_acquire(&key("other"), Duration::from_secs(5))
            .await;
    }
    let outcome = lease.release().await;
    servers[1].unpause().await;
    servers[2].unpause().await;
    match outcome {
        Err(e) if e.is_retryable() => {}
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert!(
        !lease.is_valid(),
        "a release in doubt ends the lease's validity"
    );
    // Once the nodes answer (and their breakers let calls through again),
    // releasing again confirms it.
    let give_up = Instant::now() + Duration::from_secs(10);
    while let Err(e) = lease.release().await {
        assert!(e.is_retryable() && Instant::now() < give_up, "{e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `holder` takes `k`, `waiter` starts waiting for it (up to `wait`), and the
/// holder's release wakes it: the waiting task.
async fn woken_by_a_release(
    holder: &RedlockLock,
    waiter: &RedlockLock,
    k: &str,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<dlock_core::Lease, Error>> {
    let mut held = holder
        .acquire(k, Acquire::ttl(Duration::from_secs(10)))
        .await
        .expect("a majority is free");
    let waiting = {
        let (waiter, k) = (waiter.clone(), k.to_owned());
        tokio::spawn(async move {
            waiter
                .acquire(&k, Acquire::ttl(Duration::from_secs(10)).wait(wait))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await.expect("release");
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_on_one_node_holds_a_woken_waiter_up_for_one_wait_at_most() {
    // A waiter woken by a release asks the key's gate node alone first. A key left
    // there by a crashed attempt (a minority ghost, with a long TTL) must not keep
    // it waiting while a majority is free: its next retry, on a timer, asks
    // everyone. The ghost goes on each node in turn, so one of them is the key's
    // gate.
    let (_servers, urls) = nodes(3).await;
    let a = connect(&urls, |b| b).await;
    let b = connect(&urls, |b| b).await;
    let k = key("ghost");
    let lock_key = format!("dlock:v1:lock:{{{k}}}");
    for ghost_on in &urls {
        raw(ghost_on, &["SET", &lock_key, "ghost", "PX", "30000"]).await;
        let waiting = woken_by_a_release(&a, &b, &k, Duration::from_secs(6)).await;
        let started = Instant::now();
        let mut next = waiting
            .await
            .expect("task")
            .expect("granted on the free majority, before the ghost's TTL");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "waited {:?} with the ghost on {ghost_on}",
            started.elapsed()
        );
        next.release().await.expect("release");
        raw(ghost_on, &["DEL", &lock_key]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_on_the_gate_cannot_starve_a_waiter_woken_again_and_again() {
    // A leftover key on one node, and another client taking and releasing the key
    // on the free majority in a loop: every release wakes the waiter, and a woken
    // retry asks the gate first. Were it the ghost's node for ever, the waiter
    // would wait out the ghost's 30 s; after a second of ordered retries it asks
    // everyone, and competes for the majority.
    let (_servers, urls) = nodes(3).await;
    let churner = connect(&urls, |b| b).await;
    let waiter = connect(&urls, |b| b).await;
    let k = key("churn");
    let lock_key = format!("dlock:v1:lock:{{{k}}}");
    for ghost_on in &urls {
        raw(ghost_on, &["SET", &lock_key, "ghost", "PX", "30000"]).await;
        let waiting = woken_by_a_release(&churner, &waiter, &k, Duration::from_secs(10)).await;
        let stop = Instant::now() + Duration::from_secs(9);
        while !waiting.is_finished() && Instant::now() < stop {
            // Held a fifth of the time: the waiter's plain attempt, once a second,
            // mostly finds the majority free.
            if let Ok(Some(mut lease)) = churner.try_acquire(&k, Duration::from_secs(5)).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                lease.release().await.expect("release");
            }
            tokio::time::sleep(Duration::from_millis(80)).await;
        }
        let mut granted = waiting
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("starved with the ghost on {ghost_on}: {e:?}"));
        granted.release().await.expect("release");
        raw(ghost_on, &["DEL", &lock_key]).await;
    }
}

/// What B does between the restart and its attempts.
#[derive(Clone, Copy, PartialEq)]
enum FirstContact {
    /// Its first request to the restarted node is an attempt on the key.
    Attempt,
    /// It first releases a lease it took before the restart: that request finds
    /// the old connection dead, and the client reconnects before any attempt.
    ReleaseAnother,
}

/// The known hazard of Redlock: a node that restarts empty while A holds the lock
/// forgets A's key, so B can win a majority with it. Delayed restarts close it;
/// fencing tokens stay unique and increasing either way, so a gate never accepts
/// a lower token after a higher one.
async fn restart_while_held(
    delayed_restarts: bool,
    first: FirstContact,
) -> (bool, Vec<FenceToken>) {
    // In the host's network: a killed node's connections close at once, as they
    // do without Docker.
    let (servers, urls) = nodes_in(3, true).await;
    // Per-node timeouts generous enough for a loaded machine.
    let configure = |b: dlock_redlock::RedlockConfigBuilder| {
        b.delayed_restarts(delayed_restarts)
            .per_node_timeout(Duration::from_millis(300))
    };
    let a = connect(&urls, configure).await;
    let b = connect(&urls, configure).await;
    let k = key("restart");
    let ttl = Duration::from_secs(10);
    // A holds on nodes 0 and 1 (a third party has node 2 for the moment), then
    // node 2 is free again and node 1 restarts empty, forgetting A.
    raw(
        &urls[2],
        &[
            "SET",
            &format!("dlock:v1:lock:{{{k}}}"),
            "someone",
            "PX",
            "60000",
        ],
    )
    .await;
    let held = a.acquire(&k, Acquire::ttl(ttl)).await.expect("A acquires");
    // A's key stays on node 0 until at least here: a grant to B before it needs
    // the restarted node's vote. (A's keep-alive cannot reach a majority once
    // node 1 forgot it, so after this B may win fairly.)
    let a_on_node_0 = held.valid_until();
    assert!(held_on(&urls[0], &k).await && held_on(&urls[1], &k).await);
    // Without keep-alive: no extension of B's meets the dead connection first.
    let mut other = b
        .acquire(&key("restart-other"), Acquire::ttl(ttl).no_keep_alive())
        .await
        .expect("B takes another key");
    raw(&urls[2], &["DEL", &format!("dlock:v1:lock:{{{k}}}")]).await;
    servers[1].kill().await;
    servers[1].start_again().await;
    answers(&urls[1]).await;
    match first {
        FirstContact::ReleaseAnother => drop(other.release().await),
        FirstContact::Attempt => other.leave_to_expire(),
    }
    let gate = dlock_memory::MemoryFenceGate::new();
    assert!(
        gate.write(&k, held.fence(), b"A")
            .await
            .expect("gate")
            .is_accepted()
    );
    // B finds A on node 0, and nothing on nodes 1 and 2: a majority, if the
    // restarted node votes. B's first request to it finds the old connection dead;
    // the next ones reach it.
    let mut granted = None;
    while granted.is_none() && a_on_node_0.remaining() > Duration::from_secs(1) {
        match b.try_acquire(&k, Duration::from_secs(5)).await {
            Ok(Some(lease)) => granted = Some(lease),
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                println!("B: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut tokens = vec![held.fence()];
    let b_won = granted.is_some();
    if let Some(lease) = &granted {
        tokens.push(lease.fence());
        // B's token is above A's, so the gate takes B's write and refuses A's.
        assert!(
            gate.write(&k, lease.fence(), b"B")
                .await
                .expect("gate")
                .is_accepted()
        );
        assert!(
            !gate
                .write(&k, held.fence(), b"A late")
                .await
                .expect("gate")
                .is_accepted()
        );
    }
    drop(granted);
    drop(held);
    // Later acquisitions keep climbing.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let next = b
        .acquire(
            &k,
            Acquire::ttl(Duration::from_secs(5)).wait(Duration::from_secs(15)),
        )
        .await
        .expect("a later acquisition");
    tokens.push(next.fence());
    (b_won, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_empty_lets_a_second_holder_in_without_delayed_restarts() {
    let (b_won, tokens) = restart_while_held(false, FirstContact::Attempt).await;
    println!("delayed restarts off: second holder {b_won}, tokens {tokens:?}");
    assert!(b_won, "B was never granted: the hazard did not show");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens {tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_restarts_keep_the_second_holder_out() {
    let (b_won, tokens) = restart_while_held(true, FirstContact::Attempt).await;
    println!("delayed restarts on: second holder {b_won}, tokens {tokens:?}");
    assert!(!b_won, "B was granted while A held the lock");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens {tokens:?}");
}

/// The restart is noticed whatever request meets the dead connection first: here
/// a release, after which the client is connected to the restarted node again
/// before its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_restarts_hold_when_another_request_reconnected_first() {
    let (b_won, tokens) = restart_while_held(true, FirstContact::ReleaseAnother).await;
    println!(
        "delayed restarts on, reconnected by a release: second holder {b_won}, tokens {tokens:?}"
    );
    assert!(!b_won, "B was granted while A held the lock");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens {tokens:?}");
}

/// A vote over a connection that reconnected to the same server (an idle timeout,
/// a blip) checks the server, then asks again. Once the other nodes' "held" has
/// decided the attempt, that second ask must not go out after the clean-up's
/// release, or the key stays taken on that node for a whole TTL, by an owner that
/// gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_after_a_reconnect_leaves_no_key_once_the_attempt_gave_up() {
    let (_servers, urls) = nodes(3).await;
    let locks = connect(&urls, |b| b).await;
    let mut leftovers = Vec::new();
    for round in 0..5 {
        let k = key("reconnected");
        let stored = format!("dlock:v1:lock:{{{k}}}");
        // Another owner holds the key on two of the three nodes.
        for url in &urls[..2] {
            raw(url, &["SET", &stored, "someone-else", "PX", "30000"]).await;
        }
        // This client's connections to the third node are cut; a read reconnects
        // them, unnamed.
        raw(
            &urls[2],
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .await;
        let _ = locks.holder(&key("reconnect")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let busy = locks
            .try_acquire(&k, Duration::from_secs(30))
            .await
            .expect("try_acquire");
        assert!(busy.is_none(), "granted although held on two of three");
        tokio::time::sleep(Duration::from_millis(500)).await;
        if held_on(&urls[2], &k).await {
            leftovers.push(round);
        }
    }
    assert!(
        leftovers.is_empty(),
        "the third node kept the key after the attempt gave up, in rounds {leftovers:?}"
    );
}
