//! `registry-observer webhook`: a validating admission webhook that warns
//! about, or denies, workloads whose image pull policy makes nodes contact a
//! registry; the checks are `lint`'s.
//!
//! Stages, data flowing one way:
//! config (flags: mode, fail level, namespaces) and tls (the serving pair,
//! reloaded when its files change) -> server (HTTPS, routes, limits,
//! counters) -> review (pure: AdmissionReview in, AdmissionReview out).

pub mod config;
pub mod review;
pub mod server;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

use self::{
    config::{Mode, NamespacePattern, NamespaceSelection, parse_fail_level},
    review::Reviewer,
    server::{Counters, Service},
    tls::{CertStore, PairPaths, Reload, Watcher},
};
use observer_lint::FailLevel;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// The first line on stdout, once the port is bound: scripts and tests wait
/// for it (the address follows, with the port the kernel chose for `:0`).
pub const SERVING_PREFIX: &str = "registry-observer webhook: serving https://";

#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// The serving certificate, PEM: the server certificate first, then any
    /// intermediates (tls.crt of a TLS Secret). Its SANs must include the
    /// Service's DNS name, NAME.NAMESPACE.svc. Reloaded when the file
    /// changes.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,

    /// The certificate's private key, PEM (PKCS#8, RSA or EC; tls.key of a
    /// TLS Secret). Reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,

    /// Address and port to serve HTTPS on; port 0 lets the kernel choose
    /// (the first stdout line names it).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// warn: allow everything and return findings as admission warnings.
    /// deny: reject objects with findings at or above --fail-level.
    #[arg(long, value_enum, default_value_t = Mode::Warn)]
    pub mode: Mode,

    /// In deny mode, the lowest severity that denies: `error` (Always,
    /// written or defaulted; invalid images) or `warning` (also tags
    /// instead of digests, short names). Lower findings are still returned
    /// as warnings.
    #[arg(long, value_name = "LEVEL", default_value = "error", value_parser = parse_fail_level)]
    pub fail_level: FailLevel,

    /// Judge only these namespaces: an exact name, or a prefix ending in `*`
    /// (`team-*`). Repeat for several. Default: every namespace.
    #[arg(long = "include-namespace", value_name = "NS", value_parser = NamespacePattern::parse)]
    pub include_namespaces: Vec<NamespacePattern>,

    /// Never judge these namespaces (exact name or `prefix*`); wins over
    /// --include-namespace. Repeat for several.
    #[arg(long = "exclude-namespace", value_name = "NS", value_parser = NamespacePattern::parse)]
    pub exclude_namespaces: Vec<NamespacePattern>,

    /// Also log allowed reviews and why (clean, kind without pod spec,
    /// excluded namespace), bad requests and failed TLS handshakes.
    /// Denied and warned reviews are always logged.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Help text shared by `--help` and the docs.
#[macro_export]
#[doc(hidden)]
macro_rules! webhook_help {
    () => {
        "Examples:
  registry-observer webhook --cert /etc/webhook/tls.crt --key /etc/webhook/tls.key
  registry-observer webhook --cert tls.crt --key tls.key --mode deny \\
      --exclude-namespace kube-system --exclude-namespace 'openshift-*'
  registry-observer webhook --cert tls.crt --key tls.key --mode deny --fail-level warning \\
      --include-namespace 'team-*' --listen 127.0.0.1:9443
  curl --cacert ca.crt -H 'Content-Type: application/json' \\
      --data @admission-review.json https://127.0.0.1:8443/validate

Routes: POST /validate (AdmissionReview v1), GET /healthz, /readyz, /metrics.
Bodies over 8 MiB get 413; non-JSON or non-AdmissionReview bodies 400; other
content types 415; other methods 405. Cert and key are re-read within 2 s of
a change; a broken new pair is logged and counted, and the old one served.

When the webhook cannot be reached, the API server applies the
ValidatingWebhookConfiguration's failurePolicy: `Fail` rejects every
matching request (nothing slips through, but an outage of the webhook blocks
pod creation in the selected namespaces: keep its own namespace and
kube-system out of the namespaceSelector); `Ignore` admits them unchecked,
so the webhook fails open. deploy/webhook/ ships Fail for deny mode.
See docs/WEBHOOK.md.

Exit codes: 0 stopped by SIGTERM or SIGINT; 2 bad flags, an unusable
certificate or key (the message names the file), or the address is taken."
    };
}

/// Runs the webhook until SIGTERM or SIGINT.
pub fn run(args: WebhookArgs) -> ExitCode {
    match start(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("registry-observer webhook: {message}");
            ExitCode::from(2)
        }
    }
}

fn start(args: WebhookArgs) -> Result<ExitCode, String> {
    let provider = tls::provider();
    let paths = PairPaths {
        cert: args.cert,
        key: args.key,
    };
    let pair = tls::load_pair(&paths, &provider).map_err(|e| e.to_string())?;
    let store = Arc::new(CertStore::new(pair));
    let mut tls_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&store) as Arc<dyn rustls::server::ResolvesServerCert>);
    // HTTP/1.1 only: the API server speaks it to webhooks that do not offer h2.
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));

    let reviewer = Reviewer {
        mode: args.mode,
        fail_level: args.fail_level,
        namespaces: NamespaceSelection {
            include: args.include_namespaces,
            exclude: args.exclude_namespaces,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = std::net::TcpListener::bind(args.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| {
                format!(
                    "cannot listen on {} ({e}); choose another --listen",
                    args.listen
                )
            })?;
        let bound: SocketAddr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let mut terminate =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
        println!(
            "{SERVING_PREFIX}{bound} (POST /validate; GET /healthz /readyz /metrics); mode {}, \
             {}namespaces: {}; certificate {}",
            reviewer.mode.as_str(),
            match reviewer.mode {
                Mode::Deny => format!("denying at {} and above; ", reviewer.fail_level.as_str()),
                Mode::Warn => String::new(),
            },
            reviewer.namespaces,
            paths.cert.display()
        );

        let counters = Counters::new(reviewer.mode.as_str());
        let service = Arc::new(Service::new(reviewer, counters, args.verbose));
        tokio::spawn(watch_pair(
            Watcher::new(paths, provider),
            store,
            Arc::clone(&service),
        ));
        tokio::select! {
            () = server::serve(listener, acceptor, service) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("registry-observer webhook: stopping");
        Ok(ExitCode::SUCCESS)
    })
}

/// Polls the certificate files and swaps in a changed pair.
async fn watch_pair(mut watcher: Watcher, store: Arc<CertStore>, service: Arc<Service>) {
    let mut ticks = tokio::time::interval(tls::POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match watcher.poll(&store) {
            None => {}
            Some(Reload::Reloaded) => {
                service.counters.reload(true);
                eprintln!("registry-observer webhook: certificate reloaded");
            }
            Some(Reload::Failed(error)) => {
                service.counters.reload(false);
                eprintln!(
                    "registry-observer webhook: the changed certificate files are not usable, \
                     still serving the previous pair: {error}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The flags as the binary's `webhook` subcommand flattens them.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: WebhookArgs,
    }

    fn parse(extra: &[&str]) -> Result<WebhookArgs, String> {
        let mut argv = vec!["webhook", "--cert", "c.pem", "--key", "k.pem"];
        argv.extend(extra);
        Ok(Cli::try_parse_from(argv).map_err(|e| e.to_string())?.args)
    }

    #[test]
    fn defaults_are_warn_error_all_namespaces_on_8443() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.mode, Mode::Warn);
        assert_eq!(args.fail_level, FailLevel::Error);
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(args.include_namespaces.is_empty() && args.exclude_namespaces.is_empty());
        assert!(!args.verbose);
    }

    #[test]
    fn flags_parse_and_bad_ones_say_why() {
        let args = parse(&[
            "--mode",
            "deny",
            "--fail-level",
            "warning",
            "--include-namespace",
            "team-*",
            "--exclude-namespace",
            "team-infra",
            "--exclude-namespace",
            "kube-system",
            "--listen",
            "127.0.0.1:9443",
        ])
        .unwrap();
        assert_eq!(args.mode, Mode::Deny);
        assert_eq!(args.fail_level, FailLevel::Warning);
        assert_eq!(args.include_namespaces[0].to_string(), "team-*");
        assert_eq!(args.exclude_namespaces.len(), 2);
        for (flag, value, reason) in [
            ("--fail-level", "none", "--mode warn"),
            ("--mode", "block", "warn, deny"),
            ("--include-namespace", "a*b", "only at the end"),
            ("--listen", "localhost", "socket address"),
        ] {
            let error = parse(&[flag, value]).unwrap_err();
            assert!(error.contains(reason), "{flag} {value}: {error}");
        }
        assert!(Cli::try_parse_from(["webhook", "--cert", "c"]).is_err());
    }
}
