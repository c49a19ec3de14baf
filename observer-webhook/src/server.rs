//! HTTPS: accept, TLS handshake, HTTP/1.1 routes and the limits that keep a
//! slow or hostile client from hanging or exhausting the webhook.
//!
//! Routes: `POST /validate` (AdmissionReview v1), `GET /healthz`,
//! `GET /readyz`, `GET /metrics`.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use super::review::{Outcome, Reviewer};
use observer_exposition::{PROMETHEUS_TEXT_CONTENT_TYPE, openmetrics_to_prometheus_text};

/// The largest AdmissionReview accepted. The API server takes request
/// bodies up to 3 MiB and stores objects up to 1.5 MiB (etcd); an UPDATE's
/// review carries the object twice (object and oldObject) plus the
/// envelope, so 8 MiB fits every review a real API server sends.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Reviews whose bodies are buffered at once: bounds memory to
/// `MAX_BODY_BYTES` times this, whatever the number of connections.
const MAX_BODIES_IN_FLIGHT: usize = 8;
/// Open connections; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake, a request's headers and a request's body must each
/// arrive within this. The API server's own timeout for a webhook call is
/// at most 30 s (`timeoutSeconds`, default 10).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes share.
pub struct Service {
    pub reviewer: Reviewer,
    pub counters: Counters,
    /// Printed on every denied and warned review, and with --verbose on
    /// allowed ones too.
    pub verbose: bool,
    bodies: Semaphore,
}

impl Service {
    pub fn new(reviewer: Reviewer, counters: Counters, verbose: bool) -> Service {
        Service {
            reviewer,
            counters,
            verbose,
            bodies: Semaphore::new(MAX_BODIES_IN_FLIGHT),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    mode: &'static str,
    /// `allowed`, `warned`, `denied`, or `error` (a request answered with
    /// an HTTP error instead of a review).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    /// `ok` or `failed` (the old pair is still served).
    result: &'static str,
}

/// The webhook's counters, served on /metrics.
pub struct Counters {
    registry: Mutex<Registry>,
    reviews: Family<ReviewLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    mode: &'static str,
}

impl Counters {
    pub fn new(mode: &'static str) -> Counters {
        let mut registry = Registry::with_prefix("registry_observer_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by mode and outcome",
            reviews.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Changes of the --cert/--key files, by whether the new pair is served",
            reloads.clone(),
        );
        // Every outcome from the start, so a rate is defined before the
        // first request and a dashboard shows zeros, not gaps.
        for outcome in ["allowed", "warned", "denied", "error"] {
            let _series = reviews.get_or_create(&ReviewLabels { mode, outcome });
        }
        for result in ["ok", "failed"] {
            let _series = reloads.get_or_create(&ReloadLabels { result });
        }
        Counters {
            registry: Mutex::new(registry),
            reviews,
            reloads,
            mode,
        }
    }

    pub fn review(&self, outcome: Outcome) {
        self.count_review(outcome.as_str());
    }

    pub fn review_error(&self) {
        self.count_review("error");
    }

    fn count_review(&self, outcome: &'static str) {
        self.reviews
            .get_or_create(&ReviewLabels {
                mode: self.mode,
                outcome,
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Prometheus text format 0.0.4, as the agent's own /metrics serves by
    /// default.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        openmetrics_to_prometheus_text(&text)
    }
}

/// Serves connections from `listener` forever.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, service: Arc<Service>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: wait, do not spin.
                eprintln!("registry-observer webhook: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // hyper writes a response's head and body as separate TLS records:
        // with Nagle the second waits for the client's delayed ACK (~40 ms
        // per review, measured).
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    if service.verbose {
                        eprintln!(
                            "registry-observer webhook: TLS handshake with {peer} failed: {error}"
                        );
                    }
                    return;
                }
                Err(_) => return,
            };
            let handler = service_fn(move |request| {
                let service = Arc::clone(&service);
                async move { Ok::<_, Infallible>(handle(&service, request).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), handler)
                .await;
        });
    }
}

async fn handle(service: &Service, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/validate") => {
            let response = validate(service, request).await;
            if response.status() != StatusCode::OK {
                service.counters.review_error();
            }
            response
        }
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        // The pair was loaded before the port was bound: serving means ready.
        (&Method::GET, "/readyz") => plain(StatusCode::OK, "ready\n"),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            PROMETHEUS_TEXT_CONTENT_TYPE,
            service.counters.encode(),
        ),
        (_, "/validate") => {
            service.counters.review_error();
            with_allow(
                plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "/validate takes POST with an AdmissionReview v1 (application/json)\n",
                ),
                "POST",
            )
        }
        (_, "/healthz" | "/readyz" | "/metrics") => {
            with_allow(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"), "GET")
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; POST /validate, GET /healthz, /readyz, /metrics\n",
        ),
    }
}

async fn validate(service: &Service, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !is_json(request.headers().get(CONTENT_TYPE)) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the AdmissionReview as Content-Type: application/json\n",
        );
    }
    let too_large = || {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the AdmissionReview is larger than {} MiB, more than any API server sends\n",
                MAX_BODY_BYTES >> 20
            ),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let Ok(_permit) = service.bodies.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES).collect();
    let body = match tokio::time::timeout(READ_TIMEOUT, body).await {
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {READ_TIMEOUT:?}\n"),
            );
        }
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(error)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {error}\n"),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    match service.reviewer.review(&body) {
        Ok(reviewed) => {
            service.counters.review(reviewed.outcome);
            if service.verbose || reviewed.outcome != Outcome::Allowed {
                eprintln!("registry-observer webhook: {}", reviewed.summary);
            }
            match serde_json::to_vec(&reviewed.response) {
                Ok(json) => bytes(StatusCode::OK, "application/json", json),
                Err(error) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode the response: {error}\n"),
                ),
            }
        }
        Err(error) => {
            if service.verbose {
                eprintln!("registry-observer webhook: bad request: {error}");
            }
            plain(StatusCode::BAD_REQUEST, &format!("{error}\n"))
        }
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn with_allow(mut response: Response<Full<Bytes>>, methods: &'static str) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(methods));
    response
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    text(status, "text/plain; charset=utf-8", body.to_owned())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    bytes(status, content_type, body.into_bytes())
}

fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let check = |value: Option<&str>| {
            is_json(value.map(|v| HeaderValue::from_str(v).unwrap()).as_ref())
        };
        assert!(check(Some("application/json")));
        assert!(check(Some("application/json; charset=utf-8")));
        assert!(check(Some("Application/JSON")));
        assert!(!check(Some("application/x-www-form-urlencoded")));
        assert!(!check(Some("text/plain")));
        assert!(!check(Some("application/jsonx")));
        assert!(!check(None));
    }

    #[test]
    fn counters_start_at_zero_for_every_outcome() {
        let counters = Counters::new("deny");
        counters.review(Outcome::Denied);
        counters.review_error();
        counters.reload(false);
        let text = counters.encode();
        for line in [
            "registry_observer_webhook_reviews_total{mode=\"deny\",outcome=\"allowed\"} 0",
            "registry_observer_webhook_reviews_total{mode=\"deny\",outcome=\"denied\"} 1",
            "registry_observer_webhook_reviews_total{mode=\"deny\",outcome=\"error\"} 1",
            "registry_observer_webhook_certificate_reloads_total{result=\"failed\"} 1",
            "registry_observer_webhook_certificate_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
