//! `dlock-checker`: run the safety scenarios, print the table, or act as one worker.

use std::{io::Write, sync::Arc, time::Duration};

use dlock_checker::{
    history::Event,
    scenario::{self, Backend, Fault, Plan},
    table,
    worker::{self, Stall, WorkerConfig},
};

const USAGE: &str = "usage:
  dlock-checker table [--seconds N]                        all scenarios, as docs/safety.md
  dlock-checker run --backend memory|redis|etcd|redlock|redlock-undelayed --fault client-pause|server-pause|server-restart[-late|-persistent]|blackhole|link-delay|link-reset|leader-kill|clock-fast [--seconds N]
  dlock-checker worker ...                                 (started by the checker itself)";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seconds: u64 = value("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let exe = std::env::current_exe().expect("own path");
    match args.first().map(String::as_str) {
        Some("worker") => runtime.block_on(worker_main(&value)),
        Some("run") => {
            let (Some(backend), Some(fault)) = (
                value("--backend").and_then(|b| parse_backend(&b)),
                value("--fault").and_then(|f| parse_fault(&f)),
            ) else {
                eprintln!("{USAGE}");
                return std::process::ExitCode::from(64);
            };
            let row = runtime.block_on(scenario::run(plan(backend, fault, seconds, exe)));
            println!("{}", table::row(&row));
            return verdict(&[row]);
        }
        Some("table") => {
            let rows: Vec<_> = table::matrix()
                .into_iter()
                .map(|(b, f)| {
                    eprintln!("running {} / {} for {seconds} s", b.name(), f.name());
                    runtime.block_on(scenario::run(plan(b, f, seconds, exe.clone())))
                })
                .collect();
            let command = format!(
                "cargo run --release -p dlock-checker -- table --seconds {seconds} > docs/safety.md"
            );
            print!("{}", table::page(&rows, &command, seconds));
            return verdict(&rows);
        }
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(64);
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Fails if the fenced register lost an update or a fault did nothing.
fn verdict(rows: &[scenario::Row]) -> std::process::ExitCode {
    let bad = rows
        .iter()
        .any(|r| r.report.lost_fenced != 0 || !r.fault_took_effect);
    if bad {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

fn plan(backend: Backend, fault: Fault, seconds: u64, worker_exe: std::path::PathBuf) -> Plan {
    Plan {
        backend,
        fault,
        workers: 4,
        run: Duration::from_secs(seconds),
        worker_exe,
    }
}

fn parse_backend(s: &str) -> Option<Backend> {
    Some(match s {
        "memory" => Backend::Memory,
        "redis" => Backend::Redis,
        "etcd" => Backend::Etcd,
        "redlock" => Backend::Redlock,
        "redlock-undelayed" => Backend::RedlockUndelayed,
        _ => return None,
    })
}

fn parse_fault(s: &str) -> Option<Fault> {
    Some(match s {
        "client-pause" => Fault::ClientPause,
        "server-pause" => Fault::ServerPause,
        "server-restart" => Fault::ServerRestart,
        "server-restart-late" => Fault::ServerRestartLate,
        "server-restart-persistent" => Fault::ServerRestartPersistent,
        "link-delay" => Fault::LinkDelay,
        "link-reset" => Fault::LinkReset,
        "blackhole" => Fault::Blackhole,
        "leader-kill" => Fault::LeaderKill,
        "clock-fast" => Fault::ClockFast,
        _ => return None,
    })
}

/// One worker process: its events go to stdout, one JSON line each.
async fn worker_main(value: &dyn Fn(&str) -> Option<String>) {
    let need = |flag: &str| value(flag).unwrap_or_else(|| panic!("worker: {flag} is required"));
    let url = need("--url");
    let store = need("--store");
    let resource = need("--resource");
    let cfg = WorkerConfig {
        worker: need("--worker").parse().expect("--worker"),
        key: need("--key"),
        ttl: Duration::from_millis(need("--ttl-ms").parse().expect("--ttl-ms")),
        work: Duration::ZERO,
        wait: Duration::ZERO,
        until_ns: need("--until-ns").parse().expect("--until-ns"),
    };
    let cfg = WorkerConfig {
        work: cfg.ttl / 4,
        wait: cfg.ttl * 4,
        ..cfg
    };
    let locks = dlock::connect(&url).await.expect("connect to the backend");
    let regs = scenario::store_registers(&store, &resource).await;
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let emit = move |e: Event| {
        if let Ok(line) = serde_json::to_string(&e) {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    worker::run(cfg, locks, regs, Stall::default(), emit).await;
}
