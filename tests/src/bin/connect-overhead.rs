//! `cargo xtask bench`: the observer's cost on the hook it runs most often.
//!
//! A loopback TCP connect+close loop runs in rounds that alternate between
//! "without the observer" and "with the real agent attached" (the release
//! binary, started and stopped around its round), all in one run. Each pair
//! of adjacent rounds gives a ratio; the median ratio is the result, so slow
//! drifts of the machine cancel out. Order alternates within pairs too.
//!
//! Usage: connect-overhead [--pairs N] [--connects M]

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use observer_tests::{Agent, agent_binary, require_root_and_tools};

struct Options {
    pairs: usize,
    connects: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        pairs: 11,
        connects: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--pairs" => options.pairs = value("--pairs")?,
            "--connects" => options.connects = value("--connects")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: connect-overhead [--pairs N] [--connects M]"
                ));
            }
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

fn with_observer(addr: SocketAddr, count: usize, report: &str) -> Duration {
    let agent = Agent::start(&["--report", report, "--catalog-resolve-interval", "0"]);
    let elapsed = connect_loop(addr, count);
    let output = agent.stop();
    assert!(output.status.success(), "agent failed: {output:?}");
    elapsed
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
            eprintln!("connect-overhead: {message}");
            std::process::exit(2);
        }
    };
    require_root_and_tools(&[]);
    let binary = agent_binary();
    let report = std::env::temp_dir().join(format!("ro-bench-{}.json", std::process::id()));
    let report = report.to_str().unwrap().to_string();
    let server = Server::start();

    println!(
        "connect-overhead: {} pairs of {} loopback TCP connect+close, agent {}",
        options.pairs,
        options.connects,
        binary.display()
    );
    // Warm caches, the listener's backlog path and the agent's first load.
    connect_loop(server.addr, options.connects / 4);
    with_observer(server.addr, options.connects / 4, &report);

    let mut ratios = Vec::with_capacity(options.pairs);
    let (mut total_without, mut total_with) = (Duration::ZERO, Duration::ZERO);
    println!("pair  without(us/connect)  with(us/connect)  ratio");
    for pair in 0..options.pairs {
        let (without, with) = if pair % 2 == 0 {
            let without = connect_loop(server.addr, options.connects);
            (
                without,
                with_observer(server.addr, options.connects, &report),
            )
        } else {
            let with = with_observer(server.addr, options.connects, &report);
            (connect_loop(server.addr, options.connects), with)
        };
        total_without += without;
        total_with += with;
        let ratio = with.as_secs_f64() / without.as_secs_f64();
        ratios.push(ratio);
        let per = |d: Duration| d.as_secs_f64() * 1e6 / options.connects as f64;
        println!(
            "{pair:>4}  {:>19.2}  {:>16.2}  {ratio:.4}",
            per(without),
            per(with)
        );
    }
    let report_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("last report"))
            .expect("report is JSON");
    let _ = std::fs::remove_file(&report);
    let observer = &report_json["observer"];
    let median_ratio = median(&mut ratios);
    println!(
        "last observed round: events_total {} events_lost {}",
        observer["events_total"], observer["events_lost"]
    );
    println!(
        "median ratio {median_ratio:.4}: connect+close is {:+.2}% slower with the observer (totals: {:.3}s without, {:.3}s with)",
        (median_ratio - 1.0) * 100.0,
        total_without.as_secs_f64(),
        total_with.as_secs_f64()
    );
}
