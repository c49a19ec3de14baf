//! The HTTP endpoint on `--metrics-addr`: `GET /metrics`, `GET /healthz`
//! (the process answers), `GET /readyz` (200 once the kernel programs are
//! attached, naming any hook this kernel refused; else 503), `POST /phase`
//! (body: a phase name, or `{"phase": NAME}`) and `GET /report` (the node
//! report as of now, `observer.snapshot: true`, while the agent goes on
//! observing; 503 before the programs are attached and while stopping).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ACCEPT, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use observer_exposition::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
use observer_report::{Report, phase::PhaseSource};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    outputs::metrics::{HealthSnapshot, Metrics},
    pipeline::input::{PhaseRequestError, PipelineHandle},
};

pub const DEFAULT_ADDR: &str = "127.0.0.1:9669";
/// How long a scrape waits for the pipeline's counters (Prometheus's
/// default scrape timeout is 10 s).
const COUNTERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// A phase request is a name or a tiny JSON object.
const MAX_BODY_BYTES: usize = 1024;

/// Why there is no report to serve now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportUnavailable {
    #[error("no report yet: the kernel programs are not attached yet")]
    NotAttached,
    #[error("no report: the agent is stopping; its report file is being written")]
    ShuttingDown,
}

/// Why the HTTP endpoint could not listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen on {addr} ({error}); choose another --metrics-addr, or `--metrics-addr off`"
    )]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The socket is bound but tokio cannot take it.
    #[error("cannot listen on {addr}: {error}")]
    Register {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A `POST /phase` body that names no phase (400).
#[derive(Debug, thiserror::Error)]
pub enum PhaseBodyError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body is not {{\"phase\": NAME}}: {0}")]
    NotJson(serde_json::Error),
    #[error("empty body: send the phase name, e.g. `curl -d upgrade http://127.0.0.1:9669/phase`")]
    Empty,
}

/// A report as of now, when asked for.
pub type ReportFuture = Pin<Box<dyn Future<Output = Result<Report, ReportUnavailable>> + Send>>;

/// What the handlers read.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    /// Current absolute health counts, gathered at each scrape.
    pub health: Box<dyn Fn() -> HealthSnapshot + Send + Sync>,
    /// Set once the programs are attached: the /readyz answer.
    pub ready: Arc<OnceLock<String>>,
    pub pipeline: PipelineHandle,
    /// Builds the report served by `GET /report`.
    pub report: Box<dyn Fn() -> ReportFuture + Send + Sync>,
}

/// Binds now (so a taken or invalid address is an error before anything is
/// attached); serve with [`serve`].
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|error| ListenError::Bind { addr, error })?;
    TcpListener::from_std(listener).map_err(|error| ListenError::Register { addr, error })
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let endpoint = Arc::clone(&endpoint);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let endpoint = Arc::clone(&endpoint);
                        async move { Ok::<_, Infallible>(handle(&endpoint, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

async fn handle(endpoint: &Endpoint, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            endpoint.metrics.mirror_health(&(endpoint.health)());
            // The pipeline runs once the programs are attached. Behind a
            // burst it may be slow to answer: the scrape then has its
            // previous counts (they only grow) rather than stalling.
            if endpoint.ready.get().is_some()
                && let Ok(Ok(counters)) =
                    tokio::time::timeout(COUNTERS_TIMEOUT, endpoint.pipeline.counters()).await
            {
                endpoint.metrics.mirror_pipeline(&counters);
            }
            if wants_openmetrics(&request) {
                text(
                    StatusCode::OK,
                    OPENMETRICS_CONTENT_TYPE,
                    endpoint.metrics.encode_openmetrics(),
                )
            } else {
                text(
                    StatusCode::OK,
                    PROMETHEUS_TEXT_CONTENT_TYPE,
                    endpoint.metrics.encode_prometheus_text(),
                )
            }
        }
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match endpoint.ready.get() {
            Some(answer) => plain(StatusCode::OK, answer),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the kernel programs are not attached yet\n",
            ),
        },
        (&Method::GET, "/report") => match (endpoint.report)().await {
            Ok(report) => match serde_json::to_string_pretty(&report) {
                Ok(mut json) => {
                    json.push('\n');
                    text(StatusCode::OK, "application/json", json)
                }
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot serialize the report: {e}\n"),
                ),
            },
            Err(unavailable) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("{unavailable}\n")),
        },
        (&Method::POST, "/phase") => {
            let body = match Limited::new(request.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is a phase name or {\"phase\": NAME}, at most 1 KiB\n",
                    );
                }
            };
            post_phase(&endpoint.pipeline, &body).await
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/report" | "/phase") => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /metrics, /healthz, /readyz, /report; POST /phase\n",
        ),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics, /healthz, /readyz, /report or POST /phase\n",
        ),
    }
}

/// Prometheus asks for OpenMetrics in its Accept header; everything else
/// gets the classic text format.
fn wants_openmetrics<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// `POST /phase` with its body read: 200 with the new phase, 400 for a
/// body or name the caller must fix, 503 while the agent stops.
async fn post_phase(pipeline: &PipelineHandle, body: &[u8]) -> Response<Full<Bytes>> {
    let name = match phase_from_body(body) {
        Ok(name) => name,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    match pipeline.switch_phase(&name, PhaseSource::Http).await {
        Ok(reply) => plain(StatusCode::OK, &format!("{reply}\n")),
        Err(e) => plain(phase_refused_status(&e), &format!("{e}\n")),
    }
}

fn phase_refused_status(error: &PhaseRequestError) -> StatusCode {
    match error {
        PhaseRequestError::InvalidName(_) => StatusCode::BAD_REQUEST,
        PhaseRequestError::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `upgrade` or `{"phase": "upgrade"}`.
pub fn phase_from_body(body: &[u8]) -> Result<String, PhaseBodyError> {
    let text = std::str::from_utf8(body).map_err(|_| PhaseBodyError::NotUtf8)?;
    let text = text.trim();
    if text.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct PhaseRequest {
            phase: String,
        }
        serde_json::from_str::<PhaseRequest>(text)
            .map(|r| r.phase)
            .map_err(PhaseBodyError::NotJson)
    } else if text.is_empty() {
        Err(PhaseBodyError::Empty)
    } else {
        Ok(text.to_string())
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    text(status, "text/plain; charset=utf-8", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_bodies() {
        assert_eq!(phase_from_body(b"upgrade\n").unwrap(), "upgrade");
        assert_eq!(
            phase_from_body(br#"{"phase": "post-upgrade"}"#).unwrap(),
            "post-upgrade"
        );
        let not_json = phase_from_body(br#"{"name": "x"}"#).unwrap_err();
        assert!(matches!(not_json, PhaseBodyError::NotJson(_)));
        assert!(
            not_json
                .to_string()
                .starts_with("the body is not {\"phase\": NAME}: "),
            "{not_json}"
        );
        assert_eq!(
            phase_from_body(b"  ").unwrap_err().to_string(),
            "empty body: send the phase name, e.g. `curl -d upgrade http://127.0.0.1:9669/phase`"
        );
        assert!(matches!(
            phase_from_body(&[0xff]),
            Err(PhaseBodyError::NotUtf8)
        ));
    }

    async fn body_text(response: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The status says whose the problem is: 400 the caller's (body, name),
    /// 503 the agent's (stopping).
    #[tokio::test]
    async fn phase_requests_answer_by_kind_of_refusal() {
        let (queue, mut inputs) = tokio::sync::mpsc::channel(4);
        let pipeline = PipelineHandle::new(queue.downgrade());

        let (status, body) = body_text(post_phase(&pipeline, b"upgrade").await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.starts_with("phase upgrade started at "), "{body}");
        assert!(inputs.recv().await.is_some());

        let (status, body) = body_text(post_phase(&pipeline, b"").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.starts_with("empty body"), "{body}");

        let (status, body) = body_text(post_phase(&pipeline, b"Not A Phase").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.starts_with("invalid phase name"), "{body}");

        drop(queue);
        let (status, body) = body_text(post_phase(&pipeline, b"upgrade").await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body, "the agent is shutting down\n");
        // A bad name is still the caller's to fix while stopping.
        let (status, _) = body_text(post_phase(&pipeline, b"Bad").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let ask = |accept: Option<&str>| {
            let mut builder = Request::builder().uri("/metrics");
            if let Some(accept) = accept {
                builder = builder.header(ACCEPT, accept);
            }
            wants_openmetrics(&builder.body(()).unwrap())
        };
        assert!(ask(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!ask(Some("*/*")));
        assert!(!ask(None));
    }
}
