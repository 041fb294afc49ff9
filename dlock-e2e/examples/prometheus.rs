//! dlock's metrics in Prometheus text format, through `metrics-exporter-prometheus`.
//!
//! ```text
//! cargo run -p dlock-e2e --example prometheus -- --once            # print once and exit
//! cargo run -p dlock-e2e --example prometheus -- [URL]             # serve on 127.0.0.1:9898/metrics
//! ```
//!
//! It installs the recorder, registers the help texts (`dlock::metrics::describe`),
//! and runs a small workload on URL (default `memory://`): contended acquisitions
//! in two groups, a dropped lease, a lease held past its TTL, a stale write refused.

use std::{
    io::{Read, Write},
    net::TcpListener,
    time::Duration,
};

use dlock::{Acquire, FenceToken, LockExt};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let once = args.iter().any(|a| a == "--once");
    let url = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("memory://prometheus-example", String::as_str);

    let handle = PrometheusBuilder::new().install_recorder()?;
    dlock::metrics::describe();
    workload(url).await?;

    if once {
        print!("{}", handle.render());
        return Ok(());
    }
    let listener = TcpListener::bind("127.0.0.1:9898")?;
    eprintln!("serving http://127.0.0.1:9898/metrics; Ctrl-C to stop");
    for stream in listener.incoming() {
        let mut stream = stream?;
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request)?;
        let body = handle.render();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
    }
    Ok(())
}

async fn workload(url: &str) -> Result<(), dlock::Error> {
    let (lock, gate) = dlock::connect_with_gate(url).await?;
    // Contention in two groups: four tasks per key, each taking it a few times.
    let mut tasks = Vec::new();
    for (group, key) in [("payments", "order:1"), ("reports", "report:daily")] {
        for _ in 0..4 {
            let lock = lock.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let opts = Acquire::ttl(Duration::from_secs(5)).group(group);
                    let mut lease = lock.acquire(key, opts).await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    lease.release().await?;
                }
                Ok::<_, dlock::Error>(())
            }));
        }
    }
    for task in tasks {
        task.await.expect("a task panicked")?;
    }
    // A lease dropped without release (released in the background).
    drop(
        lock.acquire("cache:warm", Acquire::ttl(Duration::from_secs(5)))
            .await?,
    );
    // A lease held past its TTL: lost.
    let ttl = lock.capabilities().fit_ttl(Duration::from_millis(50));
    let mut late = lock.acquire("job:slow", Acquire::ttl(ttl)).await?;
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let _ = late.release().await;
    // A stale write refused by the gate.
    let lease = lock
        .acquire("account:7", Acquire::ttl(Duration::from_secs(5)))
        .await?;
    gate.write("account:7", lease.fence(), b"100").await?;
    gate.write("account:7", FenceToken(lease.fence().get() - 1), b"0")
        .await?;
    drop(lease);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
