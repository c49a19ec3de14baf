//! `cargo xtask bench`: the observer's cost on the paths it sits on.
//!
//! Workloads, each on loopback:
//! - `connect`: TCP connect+close (connect hooks, capture table insert,
//!   socket-state tracepoint, handshake packets);
//! - `udp`: small datagrams sent and received on a connected UDP pair (both
//!   cgroup_skb programs on every packet);
//! - `tcp-bulk`: one TCP stream carrying large writes (cgroup_skb on every
//!   segment, the capture-table lookup on every data segment).
//!
//! Each runs in rounds that alternate between "without the observer" and
//! "with the real agent attached" (the release binary, started and stopped
//! around its round), all in one run. Each pair of adjacent rounds gives a
//! ratio; the median ratio is the result, so slow drifts of the machine
//! cancel out. Order alternates within pairs too.
//!
//! - `connect-service`: `connect` with the agent in service mode
//!   (`--state-dir`, programs pinned; detached after each round so the
//!   rounds without it have nothing attached);
//! - `restart`: not a ratio: how long a service-mode agent takes from its
//!   start to observing when it adopts pins (with connects the kernel
//!   captured while it was down waiting in the ring) against a first start
//!   that creates them, and how many records it drained.
//!
//! - `rss`: not a ratio: the agent's resident memory (peak, from
//!   /proc/PID/status VmHWM) while connects arrive at a steady rate of about
//!   10,000 events per second for 20 seconds.
//!
//! Usage: overhead [--workload connect|connect-service|udp|tcp-bulk|restart|rss|all] [--pairs N] [--scale F]

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use observer_tests::{Agent, agent_binary, require_root_and_tools};

const USAGE: &str = "usage: overhead [--workload connect|connect-service|udp|tcp-bulk|restart|rss|all] [--pairs N] [--scale F]";

const ALL: [&str; 6] = [
    "connect",
    "connect-service",
    "udp",
    "tcp-bulk",
    "restart",
    "rss",
];

struct Options {
    workloads: Vec<&'static str>,
    pairs: usize,
    /// Multiplies each workload's size (rounds of about a second at 1).
    scale: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        workloads: ALL.to_vec(),
        pairs: 11,
        scale: 1.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<String, String> {
            args.next()
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--pairs" => {
                options.pairs = value("--pairs")?
                    .parse()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or("--pairs needs a positive number")?
            }
            "--scale" => {
                options.scale = value("--scale")?
                    .parse()
                    .ok()
                    .filter(|v: &f64| *v > 0.0)
                    .ok_or("--scale needs a positive number")?
            }
            "--workload" => {
                options.workloads = match value("--workload")?.as_str() {
                    "all" => ALL.to_vec(),
                    name => match ALL.iter().find(|w| **w == name) {
                        Some(workload) => vec![*workload],
                        None => return Err(format!("unknown workload {name:?}; {USAGE}")),
                    },
                }
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(options)
}

/// Accepts and drops connections until told to stop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener");
        let addr = listener.local_addr().unwrap();
        // std listens with a backlog of 128. On two cores the accept thread
        // sometimes falls behind; a full queue drops SYNs and the client
        // retransmits a second later, which would swamp the measurement.
        // listen(2) again on a listening socket resizes its backlog.
        // SAFETY: listen on an open, bound socket.
        let resized = unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        assert_eq!(resized, 0, "listen: {}", std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                drop(stream);
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connect and close `count` times; returns the elapsed time. The close
/// resets (SO_LINGER 0) so hundreds of thousands of connections do not pile
/// up in TIME_WAIT and exhaust ephemeral ports.
fn connect_loop(addr: SocketAddr, count: usize) -> Duration {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let started = Instant::now();
    for _ in 0..count {
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
                panic!("out of ephemeral ports: {e}")
            }
            Err(e) => panic!("connect to {addr} failed: {e}"),
        };
        // SAFETY: setsockopt on an open socket with a correctly sized value.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    started.elapsed()
}

/// `count` datagrams of 64 bytes from one connected UDP socket to another,
/// each received before the next is sent: every datagram passes the egress
/// and the ingress program once.
fn udp_loop(count: usize) -> Duration {
    let a = UdpSocket::bind("127.0.0.1:0").expect("binding UDP");
    let b = UdpSocket::bind("127.0.0.1:0").expect("binding UDP");
    a.connect(b.local_addr().unwrap()).expect("connecting UDP");
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let payload = [0x5au8; 64];
    let mut buf = [0u8; 128];
    let started = Instant::now();
    for _ in 0..count {
        a.send(&payload).expect("sending a datagram");
        let n = b.recv(&mut buf).expect("receiving a datagram");
        assert_eq!(n, payload.len());
    }
    started.elapsed()
}

/// `megabytes` MiB over one loopback TCP connection in 64 KiB writes, read
/// by another thread; the time until the reader has it all.
fn tcp_bulk(megabytes: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener");
    let addr = listener.local_addr().unwrap();
    let total = megabytes << 20;
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting");
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0;
        while received < total {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the stream: {e}"),
            }
        }
        received
    });
    let chunk = vec![0xa5u8; 1 << 16];
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connecting");
    for _ in 0..(total / chunk.len()) {
        stream.write_all(&chunk).expect("writing the stream");
    }
    drop(stream);
    assert_eq!(reader.join().expect("reader thread"), total);
    started.elapsed()
}

/// One round with the agent. In service mode its programs stay attached
/// after it stops, so they are detached after the round: a round without
/// the observer must have nothing attached (left attached, they fill their
/// ring buffer with nobody draining it, which the next agent reports).
fn with_observer(
    report: &str,
    service: Option<&ServiceMode>,
    workload: &dyn Fn() -> Duration,
) -> Duration {
    let mut args = vec!["--report", report, "--catalog-resolve-interval", "0"];
    if let Some(service) = service {
        args.extend(service.args());
    }
    let agent = Agent::start(&args);
    let elapsed = workload();
    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    if let Some(service) = service {
        service.detach();
    }
    elapsed
}

/// Alternating rounds without and with the agent; prints each pair and
/// returns the median ratio.
fn measure(
    name: &str,
    unit: &str,
    units: usize,
    pairs: usize,
    report: &str,
    service: Option<&ServiceMode>,
    workload: &dyn Fn() -> Duration,
) -> f64 {
    // Warm caches and the agent's first load.
    workload();
    with_observer(report, service, workload);
    let mut ratios = Vec::with_capacity(pairs);
    let (mut total_without, mut total_with) = (Duration::ZERO, Duration::ZERO);
    println!("\n{name}: {pairs} pairs of {units} {unit}");
    println!("pair  without(us/{unit})  with(us/{unit})  ratio");
    for pair in 0..pairs {
        let (without, with) = if pair % 2 == 0 {
            let without = workload();
            (without, with_observer(report, service, workload))
        } else {
            let with = with_observer(report, service, workload);
            (workload(), with)
        };
        total_without += without;
        total_with += with;
        let ratio = with.as_secs_f64() / without.as_secs_f64();
        ratios.push(ratio);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / units as f64;
        println!(
            "{pair:>4}  {:>16.3}  {:>13.3}  {ratio:.4}",
            per(without),
            per(with)
        );
    }
    let report_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).expect("last report"))
            .expect("report is JSON");
    let observer = &report_json["observer"];
    let median_ratio = median(&mut ratios);
    println!(
        "last observed round: events_total {} events_lost {}",
        observer["events_total"], observer["events_lost"]
    );
    println!(
        "{name}: median ratio {median_ratio:.4}, {:+.2}% with the observer (totals: {:.3}s without, {:.3}s with)",
        (median_ratio - 1.0) * 100.0,
        total_without.as_secs_f64(),
        total_with.as_secs_f64()
    );
    median_ratio
}

/// Peak and current resident memory of `pid` in KiB (VmHWM, VmRSS).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Connects at a steady `per_second` for `seconds` (each is a connect()
/// event and a socket-state event) with the agent running; returns the
/// agent's memory and the event rate it saw.
fn rss(report: &str, per_second: usize, seconds: u64) {
    let server = Server::start();
    let agent = Agent::start(&["--report", report, "--catalog-resolve-interval", "0"]);
    let pid = agent.pid();
    let (_, at_start) = memory_kib(pid);
    let started = Instant::now();
    let slice = Duration::from_millis(10);
    let per_slice = per_second / 100;
    let mut next = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        connect_loop(server.addr, per_slice);
        next += slice;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed();
    let (peak, now) = memory_kib(pid);
    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    let report_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).expect("report"))
            .expect("report is JSON");
    let observer = &report_json["observer"];
    let events = observer["events_total"].as_u64().unwrap_or(0);
    println!(
        "\nrss: {events} events in {:.1}s ({:.0} events/s), events_lost {}",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        observer["events_lost"]
    );
    println!(
        "rss: agent resident memory {:.1} MiB at start, {:.1} MiB at the end, peak {:.1} MiB",
        at_start as f64 / 1024.0,
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}

/// A state dir and pin dir for service-mode rounds, removed at the end.
struct ServiceMode {
    state: std::path::PathBuf,
    pins: String,
}

impl ServiceMode {
    fn new(name: &str) -> ServiceMode {
        let id = std::process::id();
        let state = std::env::temp_dir().join(format!("ro-bench-state-{name}-{id}"));
        let _ = std::fs::remove_dir_all(&state);
        ServiceMode {
            state,
            pins: format!("/sys/fs/bpf/ro-bench-{name}-{id}"),
        }
    }

    fn args(&self) -> Vec<&str> {
        vec![
            "--state-dir",
            self.state.to_str().unwrap(),
            "--pin-dir",
            &self.pins,
            "--metrics-addr",
            "off",
        ]
    }

    /// `registry-observer detach` and the state dir removed: the next
    /// round starts from nothing.
    fn detach(&self) {
        let output = std::process::Command::new(agent_binary())
            .args(["detach", "--pin-dir", &self.pins])
            .output()
            .expect("registry-observer detach");
        assert!(output.status.success(), "detach: {output:?}");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Drop for ServiceMode {
    /// A benchmark that panics leaves nothing attached either.
    fn drop(&mut self) {
        if std::path::Path::new(&self.pins).exists() {
            let _ = std::process::Command::new(agent_binary())
                .args(["detach", "--pin-dir", &self.pins])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Start-to-observing of a service-mode agent: the first start (pins
/// created), then `rounds` restarts that adopt them with `backlog` connects
/// captured while no agent ran, each drained by the new agent.
fn restart(report: &str, backlog: usize, rounds: usize) {
    let server = Server::start();
    let service = ServiceMode::new("restart");
    let mut args = vec!["--report", report, "--catalog-resolve-interval", "0"];
    args.extend(service.args());
    let started = Instant::now();
    let agent = Agent::start(&args);
    let first = started.elapsed();
    assert!(agent.stop().status.success());
    println!(
        "
restart: first start (programs loaded, attached, pinned): {:.0} ms",
        first.as_secs_f64() * 1e3
    );
    println!("round  backlog(connects)  start-to-observing(ms)  events drained");
    let mut times = Vec::new();
    let events_total = || -> u64 {
        let report_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("report"))
                .expect("report is JSON");
        report_json["observer"]["events_total"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut total_before = events_total();
    for round in 0..rounds {
        connect_loop(server.addr, backlog);
        let started = Instant::now();
        let agent = Agent::start(&args);
        let elapsed = started.elapsed();
        assert!(agent.stop().status.success());
        let total = events_total();
        println!(
            "{round:>5}  {backlog:>17}  {:>22.0}  {}",
            elapsed.as_secs_f64() * 1e3,
            total - total_before
        );
        total_before = total;
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    println!(
        "restart: median start-to-observing when adopting {:.0} ms (first start {:.0} ms)",
        median(&mut times),
        first.as_secs_f64() * 1e3
    );
    service.detach();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("overhead: {message}");
            std::process::exit(2);
        }
    };
    require_root_and_tools(&[]);
    let binary = agent_binary();
    let report = std::env::temp_dir().join(format!("ro-bench-{}.json", std::process::id()));
    let report = report.to_str().unwrap().to_string();
    println!("overhead: agent {}", binary.display());
    let scaled = |base: f64| ((base * options.scale) as usize).max(1);
    let mut results = Vec::new();
    for workload in &options.workloads {
        let ratio = match *workload {
            "connect" => {
                let server = Server::start();
                let count = scaled(20_000.0);
                measure(
                    "connect",
                    "connect",
                    count,
                    options.pairs,
                    &report,
                    None,
                    &|| connect_loop(server.addr, count),
                )
            }
            "connect-service" => {
                let server = Server::start();
                let count = scaled(20_000.0);
                let service = ServiceMode::new("connect");
                measure(
                    "connect-service",
                    "connect",
                    count,
                    options.pairs,
                    &report,
                    Some(&service),
                    &|| connect_loop(server.addr, count),
                )
            }
            "restart" => {
                restart(&report, scaled(20_000.0), options.pairs.min(5));
                continue;
            }
            "udp" => {
                let count = scaled(100_000.0);
                measure(
                    "udp",
                    "datagram",
                    count,
                    options.pairs,
                    &report,
                    None,
                    &|| udp_loop(count),
                )
            }
            "tcp-bulk" => {
                let megabytes = scaled(2048.0);
                measure(
                    "tcp-bulk",
                    "MiB",
                    megabytes,
                    options.pairs,
                    &report,
                    None,
                    &|| tcp_bulk(megabytes),
                )
            }
            "rss" => {
                rss(&report, 5_000, 20);
                continue;
            }
            other => unreachable!("workload {other} was validated"),
        };
        results.push((*workload, ratio));
    }
    let _ = std::fs::remove_file(&report);
    println!();
    for (workload, ratio) in results {
        println!("{workload:>9}: {:+.2}%", (ratio - 1.0) * 100.0);
    }
}
