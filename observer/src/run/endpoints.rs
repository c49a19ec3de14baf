//! The agent's endpoints, up before the (slow) load so `/healthz` answers
//! and `/readyz` says "not yet" meanwhile, and phase requests queue up:
//! the HTTP endpoint (metrics, health, phases, report snapshots) and the
//! control socket.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, OnceLock},
};

use observer_report::Report;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    UsageError,
    control::{
        http::{self, Endpoint, ReportUnavailable},
        socket::{self, ControlSocket},
    },
    outputs::metrics::{HealthSnapshot, Metrics},
    pipeline::input::PipelineHandle,
    run::{
        MetricsAddr, RunOptions,
        report::{RunFacts, StageCounts, Taken, node_report},
    },
};

/// What the endpoints read outside the pipeline; set once the programs
/// are attached.
pub struct Live {
    pub facts: RunFacts,
    /// The other stages' counts, read at each scrape or report.
    pub counts: Box<dyn Fn() -> StageCounts + Send + Sync>,
}

pub struct Endpoints {
    pub http_server: Option<JoinHandle<()>>,
    pub control_server: Option<JoinHandle<()>>,
    pub metrics_url: Option<String>,
    pub control_path: Option<String>,
}

impl Endpoints {
    /// Binds and serves until `stop` turns true.
    pub fn start(
        options: &RunOptions,
        metrics: Arc<Metrics>,
        pipeline: PipelineHandle,
        ready: Arc<OnceLock<String>>,
        live: Arc<OnceLock<Live>>,
        stop: watch::Receiver<bool>,
    ) -> Result<Endpoints, UsageError> {
        let (http_server, metrics_url) = match bind_metrics(options.metrics_addr)? {
            Some((listener, addr)) => {
                let endpoint = Endpoint {
                    metrics,
                    health: {
                        let live = Arc::clone(&live);
                        Box::new(move || {
                            live.get()
                                .map(|live| health(&(live.counts)()))
                                .unwrap_or_default()
                        })
                    },
                    ready,
                    report: {
                        let (live, pipeline) = (Arc::clone(&live), pipeline.clone());
                        Box::new(move || {
                            let (live, pipeline) = (Arc::clone(&live), pipeline.clone());
                            Box::pin(async move { report_now(&live, &pipeline).await })
                        })
                    },
                    pipeline: pipeline.clone(),
                };
                (
                    Some(tokio::spawn(http::serve(
                        listener,
                        Arc::new(endpoint),
                        stop.clone(),
                    ))),
                    Some(format!("http://{addr}/metrics")),
                )
            }
            None => (None, None),
        };
        let control = bind_control(options.control_socket.as_deref())?;
        let control_path = control.as_ref().map(|c| c.path().display().to_string());
        let control_server = control.map(|socket| tokio::spawn(socket.serve(pipeline, stop)));
        Ok(Endpoints {
            http_server,
            control_server,
            metrics_url,
            control_path,
        })
    }

    /// Waits for both servers to end (after `stop` turned true).
    pub async fn stopped(self) {
        for server in [self.http_server, self.control_server]
            .into_iter()
            .flatten()
        {
            let _ = server.await;
        }
    }
}

/// The node report as of now, while the agent runs: `GET /report` and the
/// state dir's `report.json`.
pub async fn report_now(
    live: &OnceLock<Live>,
    pipeline: &PipelineHandle,
) -> Result<Report, ReportUnavailable> {
    let live = live.get().ok_or(ReportUnavailable::NotAttached)?;
    let snapshot = pipeline
        .snapshot()
        .await
        .map_err(|_| ReportUnavailable::ShuttingDown)?;
    Ok(node_report(
        &live.facts,
        snapshot,
        (live.counts)(),
        Taken::WhileRunning,
    ))
}

/// The health series' absolute counts, from the same counts a report
/// reads.
fn health(counts: &StageCounts) -> HealthSnapshot {
    let (losses, truncated): (Vec<_>, Vec<_>) = counts
        .kernel
        .iter()
        .partition(|(counter, _)| counter.is_loss());
    let named = |counts: Vec<&(observer_common::Counter, u64)>| {
        counts
            .into_iter()
            .map(|(counter, value)| (counter.name(), *value))
            .collect()
    };
    HealthSnapshot {
        read: counts.read,
        kernel_losses: named(losses),
        kernel_truncated: named(truncated),
        events_file_dropped: counts.events_file_dropped,
    }
}

fn bind_metrics(
    addr: MetricsAddr,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, UsageError> {
    match addr {
        MetricsAddr::Off => Ok(None),
        MetricsAddr::Explicit(addr) => http::bind(addr)
            .map(|l| Some((l, addr)))
            .map_err(UsageError::new),
        MetricsAddr::Default(addr) => match http::bind(addr) {
            Ok(listener) => Ok(Some((listener, addr))),
            Err(e) => {
                eprintln!("registry-observer: warning: {e}; running without the HTTP endpoint");
                Ok(None)
            }
        },
    }
}

fn bind_control(explicit: Option<&Path>) -> Result<Option<ControlSocket>, UsageError> {
    match explicit {
        Some(path) => ControlSocket::bind(path).map(Some).map_err(UsageError::new),
        None => match ControlSocket::bind(Path::new(socket::DEFAULT_SOCKET)) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) => {
                eprintln!(
                    "registry-observer: warning: {e}; running without a control socket (`registry-observer mark` will not reach this agent)"
                );
                Ok(None)
            }
        },
    }
}
