//! Prometheus metrics: registry attempts by who and what, and the agent's
//! health (events produced, delivered, lost and truncated per stage, parse
//! errors, payload parser results, attribution failures, last event time,
//! build info).
//!
//! Labels stay bounded: no pid, address or timestamp; the series of a pod
//! that is gone are removed with [`Metrics::forget_pod`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, atomic::AtomicU64},
    time::SystemTime,
};

use observer_report::{
    attempt::{Attempt, Evidence, Verdict},
    observer::PayloadStats,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{bpf::read::ReadStats, pipeline::snapshot::PipelineCounters};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub phase: String,
    pub component: String,
    /// The pod's namespace; empty when there is none (or it is not known).
    pub namespace: String,
    /// The catalog pattern that matched, not the host: bounded by the catalog.
    pub registry: String,
    pub category: String,
    /// The event's strongest evidence (see [`strongest`]).
    pub evidence: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LossLabels {
    stage: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParserLabels {
    parser: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PayloadLabels {
    parser: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnparsedLabels {
    parser: &'static str,
    /// An `UnparsedReason` key: bounded by that enum.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The ring buffer between kernel programs and the reader.
const KERNEL_RING: &str = "kernel_ring";
/// The queue between the reader and the pipeline.
/// Registry events the record stage kept in no attempt (`--max-attempts`).
const ATTEMPTS_TABLE_FULL: LossLabels = LossLabels {
    stage: "record",
    reason: "attempts_table_full",
};
/// Parsers as `DecodeError::parser` names them.
const PARSERS: [&str; 2] = ["record", "dns"];
/// The payload parsers, as `payload::Parser::as_str` names them.
const PAYLOAD_PARSERS: [&str; 3] = ["tls", "http", "dns_tcp"];

/// Absolute counts gathered elsewhere, mirrored into the health series at
/// each scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub read: ReadStats,
    /// Loss counters of the kernel programs, by counter name.
    pub kernel_losses: Vec<(&'static str, u64)>,
    /// The kernel's other counters (`Counter::is_loss` false): events that
    /// went out cut short, by counter name.
    pub kernel_truncated: Vec<(&'static str, u64)>,
    /// Lines the `--events` writer could not keep up with.
    pub events_file_dropped: u64,
}

pub struct Metrics {
    registry: Registry,
    attempts: Family<AttemptLabels, Counter>,
    produced: Family<StageLabels, Counter>,
    delivered: Family<StageLabels, Counter>,
    lost: Family<LossLabels, Counter>,
    truncated: Family<LossLabels, Counter>,
    events_file_dropped: Counter,
    payload_parsed: Family<PayloadLabels, Counter>,
    payload_unparsed: Family<UnparsedLabels, Counter>,
    payload_not_recognized: Counter,
    parse_errors: Family<ParserLabels, Counter>,
    attribution_failures: Family<ReasonLabels, Counter>,
    last_event: Gauge<f64, AtomicU64>,
    /// Series per pod uid, so they can be removed when the pod is gone.
    pod_series: Mutex<HashMap<String, HashSet<AttemptLabels>>>,
    /// Serializes scrapes: mirroring absolute counts is read-then-add.
    mirror_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("registry_observer");
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "attempts",
            "Registry events (DNS queries, connects, sendto()s, TLS ClientHellos, HTTP requests) by phase, component, registry and verdict; one increment per event, labelled with its strongest evidence",
            attempts.clone(),
        );
        let produced = Family::<StageLabels, Counter>::default();
        registry.register(
            "events_produced",
            "Events that entered a stage (kernel_ring: records the kernel programs produced)",
            produced.clone(),
        );
        let delivered = Family::<StageLabels, Counter>::default();
        registry.register(
            "events_delivered",
            "Events that left a stage for the next one",
            delivered.clone(),
        );
        let lost = Family::<LossLabels, Counter>::default();
        registry.register(
            "events_lost",
            "Events lost, by stage and reason; any loss makes the run incomplete",
            lost.clone(),
        );
        let truncated = Family::<LossLabels, Counter>::default();
        registry.register(
            "events_truncated",
            "Events delivered cut short, by stage and reason (payload longer than the capture, exec arguments unreadable); not a loss",
            truncated.clone(),
        );
        let events_file_dropped = Counter::default();
        registry.register(
            "events_file_lines_dropped",
            "Lines the --events writer dropped because it fell behind or could not write",
            events_file_dropped.clone(),
        );
        let parse_errors = Family::<ParserLabels, Counter>::default();
        registry.register(
            "parse_errors",
            "Records or payloads that did not parse, by parser",
            parse_errors.clone(),
        );
        let payload_parsed = Family::<PayloadLabels, Counter>::default();
        registry.register(
            "payload_streams_parsed",
            "TCP streams whose first bytes a payload parser (tls, http, dns_tcp) read",
            payload_parsed.clone(),
        );
        let payload_unparsed = Family::<UnparsedLabels, Counter>::default();
        registry.register(
            "payload_streams_unparsed",
            "TCP streams a payload parser claimed but could not read, by parser and reason",
            payload_unparsed.clone(),
        );
        let payload_not_recognized = Counter::default();
        registry.register(
            "payload_streams_not_recognized",
            "TCP streams no payload parser claimed (other protocols; not errors)",
            payload_not_recognized.clone(),
        );
        let attribution_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "attribution_failures",
            "Attributions that lacked a fact: process_gone (exited before /proc was read), cgroup_unknown",
            attribution_failures.clone(),
        );
        let last_event = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_event_timestamp_seconds",
            "Wall-clock time the pipeline last received a kernel event (Unix seconds)",
            last_event.clone(),
        );
        // A gauge of 1 with the version as label: the Prometheus convention
        // for build info, readable by every text-format parser.
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running agent's version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        // Health series exist from the start, at zero: an absent series
        // cannot be told apart from a broken scrape.
        create_series(&produced, &StageLabels { stage: KERNEL_RING });
        create_series(&delivered, &StageLabels { stage: KERNEL_RING });
        create_series(&lost, &ATTEMPTS_TABLE_FULL);
        for counter in observer_common::Counter::ALL {
            let labels = LossLabels {
                stage: KERNEL_RING,
                reason: counter.name(),
            };
            if counter.is_loss() {
                create_series(&lost, &labels);
            } else {
                create_series(&truncated, &labels);
            }
        }
        for parser in PAYLOAD_PARSERS {
            create_series(&payload_parsed, &PayloadLabels { parser });
        }
        for parser in PARSERS {
            create_series(&parse_errors, &ParserLabels { parser });
        }
        for reason in ["process_gone", "cgroup_unknown"] {
            create_series(&attribution_failures, &ReasonLabels { reason });
        }

        Metrics {
            registry,
            attempts,
            produced,
            delivered,
            lost,
            truncated,
            events_file_dropped,
            payload_parsed,
            payload_unparsed,
            payload_not_recognized,
            parse_errors,
            attribution_failures,
            last_event,
            pod_series: Mutex::new(HashMap::new()),
            mirror_lock: Mutex::new(()),
        }
    }

    /// One registry event, merged into `attempt` (its state after the merge).
    pub fn record_event(&self, attempt: &Attempt, event_evidence: &[Evidence]) {
        let labels = attempt_labels(attempt, event_evidence);
        self.attempts.get_or_create(&labels).inc();
        if let Some(pod) = &attempt.pod {
            self.pod_series
                .lock()
                .expect("metrics lock")
                .entry(pod.uid.clone())
                .or_default()
                .insert(labels);
        }
    }

    /// Removes every attempt series of a pod that is gone, so a node that
    /// runs many short-lived pods does not grow its series without bound.
    /// The attribution layer calls this when it learns a pod departed.
    pub fn forget_pod(&self, pod_uid: &str) {
        let series = self
            .pod_series
            .lock()
            .expect("metrics lock")
            .remove(pod_uid)
            .unwrap_or_default();
        for labels in series {
            self.attempts.remove(&labels);
        }
    }

    /// A registry event in no attempt: the table was full.
    pub fn attempt_not_recorded(&self) {
        self.lost.get_or_create(&ATTEMPTS_TABLE_FULL).inc();
    }

    /// Brings the pipeline's series up to its counters, read at scrape
    /// time (the pipeline does not touch them per event).
    pub fn mirror_pipeline(&self, counters: &PipelineCounters) {
        let _serialized = self.mirror_lock.lock().expect("metrics lock");
        for (&parser, &value) in &counters.parse_errors {
            mirror(
                &self.parse_errors.get_or_create(&ParserLabels { parser }),
                value,
            );
        }
        self.attribution(
            counters.attribution.process_gone,
            counters.attribution.cgroup_unknown,
        );
        self.payload_parsers(&counters.payload_parsers);
        if let Some(at) = counters.last_event_at {
            self.event_received(at);
        }
    }

    /// Mirrors the attributor's absolute counts.
    fn attribution(&self, process_gone: u64, cgroup_unknown: u64) {
        for (reason, value) in [
            ("process_gone", process_gone),
            ("cgroup_unknown", cgroup_unknown),
        ] {
            mirror(
                &self
                    .attribution_failures
                    .get_or_create(&ReasonLabels { reason }),
                value,
            );
        }
    }

    /// Mirrors the connection stage's absolute parser counts. Unparsed
    /// series appear with their first stream: reasons are many and rare.
    fn payload_parsers(&self, stats: &PayloadStats) {
        for (parser, parser_stats) in [
            ("tls", &stats.tls),
            ("http", &stats.http),
            ("dns_tcp", &stats.dns_tcp),
        ] {
            mirror(
                &self.payload_parsed.get_or_create(&PayloadLabels { parser }),
                parser_stats.parsed,
            );
            for (reason, value) in &parser_stats.unparsed {
                mirror(
                    &self.payload_unparsed.get_or_create(&UnparsedLabels {
                        parser,
                        reason: reason.clone(),
                    }),
                    *value,
                );
            }
        }
        mirror(&self.payload_not_recognized, stats.not_recognized);
    }

    fn event_received(&self, at: SystemTime) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_event.set(seconds);
    }

    /// Brings the health series up to the absolute counts in `health`.
    pub fn mirror_health(&self, health: &HealthSnapshot) {
        let _serialized = self.mirror_lock.lock().expect("metrics lock");
        let kernel_lost: u64 = health.kernel_losses.iter().map(|(_, v)| v).sum();
        let ring = StageLabels { stage: KERNEL_RING };
        mirror(
            &self.produced.get_or_create(&ring),
            health.read.records + kernel_lost,
        );
        mirror(&self.delivered.get_or_create(&ring), health.read.records);
        for (reason, value) in &health.kernel_losses {
            mirror(
                &self.lost.get_or_create(&LossLabels {
                    stage: KERNEL_RING,
                    reason,
                }),
                *value,
            );
        }
        for (reason, value) in &health.kernel_truncated {
            mirror(
                &self.truncated.get_or_create(&LossLabels {
                    stage: KERNEL_RING,
                    reason,
                }),
                *value,
            );
        }

        mirror(&self.events_file_dropped, health.events_file_dropped);
    }

    /// OpenMetrics text, `# EOF` included.
    pub fn encode_openmetrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Prometheus text format 0.0.4, for clients that do not accept
    /// OpenMetrics.
    pub fn encode_prometheus_text(&self) -> String {
        observer_exposition::openmetrics_to_prometheus_text(&self.encode_openmetrics())
    }
}

/// A series at zero. (`get_or_create` returns a guard of the family's lock;
/// it is released at the end of this function.)
fn create_series<L: Clone + std::hash::Hash + Eq>(family: &Family<L, Counter>, labels: &L) {
    let _series = family.get_or_create(labels);
}

/// Counters only go up; the sources here keep absolute totals.
fn mirror(counter: &Counter, absolute: u64) {
    let current = counter.get();
    if absolute > current {
        counter.inc_by(absolute - current);
    }
}

/// The strongest evidence of one event: the registry's name in the
/// connection's own bytes (TLS SNI, then a proxy CONNECT, then an HTTP
/// Host) is stronger than a connect() or sendto() to its address, which is
/// stronger than the answer that named the address, which is stronger than
/// a lookup. One label value per event keeps `sum(attempts_total)` equal to
/// the events; distinct ranks keep the choice independent of order.
pub fn strongest(evidence: &[Evidence]) -> Option<Evidence> {
    evidence.iter().copied().max_by_key(|e| match e {
        Evidence::DnsQuery => 0,
        Evidence::DnsAnswer => 1,
        Evidence::Sendmsg => 2,
        Evidence::Connect => 3,
        Evidence::HttpHost => 4,
        Evidence::HttpConnect => 5,
        Evidence::TlsSni => 6,
    })
}

pub fn attempt_labels(attempt: &Attempt, event_evidence: &[Evidence]) -> AttemptLabels {
    AttemptLabels {
        phase: attempt.phase.clone(),
        component: attempt.component.clone(),
        namespace: attempt
            .pod
            .as_ref()
            .and_then(|p| p.namespace.clone())
            .unwrap_or_default(),
        registry: attempt.registry.pattern.clone(),
        category: attempt.registry.category.as_str().to_string(),
        evidence: strongest(event_evidence)
            .map_or("", Evidence::as_str)
            .to_string(),
        verdict: verdict_label(attempt.verdict).to_string(),
    }
}

pub fn verdict_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Violation => "violation",
        Verdict::Allowed => "allowed",
        Verdict::NotEnforced => "not_enforced",
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

    use observer_report::{
        attempt::{Category, RegistryRef, Source},
        process::{CgroupRef, Pod, ProcessInfo},
    };

    use super::*;

    fn attempt(component: &str, pod: Option<&str>) -> Attempt {
        Attempt {
            host: Some("quay.io".into()),
            registry: RegistryRef {
                pattern: "quay.io".into(),
                category: Category::ImageRegistry,
                source: Source::Builtin,
                blocked: false,
            },
            dest: None,
            evidence: BTreeSet::from([Evidence::DnsQuery]),
            process: ProcessInfo {
                pid: 4242,
                comm: "skopeo".into(),
                uid: Some(0),
                exe: None,
                cmdline: None,
                ancestors: vec![],
            },
            cgroup: CgroupRef { id: 1, path: None },
            unit: None,
            container: None,
            pod: pod.map(|uid| Pod {
                namespace: Some("openshift-mco".into()),
                ..Pod::uid_only(uid)
            }),
            component: component.into(),
            phase: "upgrade".into(),
            verdict: Verdict::Violation,
            allowed_by: None,
            mirror_fallback: false,
            first_seen: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            count: 1,
            node: None,
            outcomes: Default::default(),
            on_behalf_of: None,
        }
    }

    #[test]
    fn attempts_carry_bounded_labels_and_count_events() {
        let metrics = Metrics::new();
        let a = attempt("machine-config-daemon", None);
        metrics.record_event(&a, &[Evidence::DnsQuery]);
        metrics.record_event(&a, &[Evidence::DnsAnswer, Evidence::Connect]);
        metrics.record_event(&a, &[Evidence::DnsQuery]);
        let text = metrics.encode_openmetrics();
        assert!(text.contains(
            "registry_observer_attempts_total{phase=\"upgrade\",component=\"machine-config-daemon\",namespace=\"\",registry=\"quay.io\",category=\"image-registry\",evidence=\"dns_query\",verdict=\"violation\"} 2\n"
        ), "{text}");
        assert!(
            text.contains("evidence=\"connect\",verdict=\"violation\"} 1\n"),
            "{text}"
        );
        // Nothing that grows with time or processes becomes a label.
        assert!(!text.contains("4242"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_departed_pod_loses_its_series_and_others_stay() {
        let metrics = Metrics::new();
        metrics.record_event(&attempt("pod/abc", Some("abc")), &[Evidence::DnsQuery]);
        metrics.record_event(&attempt("crio", None), &[Evidence::DnsQuery]);
        assert!(
            metrics
                .encode_openmetrics()
                .contains("component=\"pod/abc\"")
        );
        assert!(
            metrics
                .encode_openmetrics()
                .contains("namespace=\"openshift-mco\"")
        );
        metrics.forget_pod("abc");
        let text = metrics.encode_openmetrics();
        assert!(!text.contains("pod/abc"), "{text}");
        assert!(text.contains("component=\"crio\""), "{text}");
        // Forgetting an unknown pod is harmless.
        metrics.forget_pod("never-seen");
    }

    #[test]
    fn health_mirrors_absolute_counts_per_stage() {
        let metrics = Metrics::new();
        let mut health = HealthSnapshot {
            read: ReadStats {
                records: 100,
                already_applied: 0,
            },
            kernel_losses: vec![("connect_reserve_failed", 5), ("dns_reserve_failed", 0)],
            kernel_truncated: vec![("tcp_truncated", 7)],
            events_file_dropped: 2,
        };
        metrics.mirror_health(&health);
        // A second scrape with the same totals adds nothing.
        metrics.mirror_health(&health);
        let text = metrics.encode_openmetrics();
        for expected in [
            "registry_observer_events_produced_total{stage=\"kernel_ring\"} 105\n",
            "registry_observer_events_delivered_total{stage=\"kernel_ring\"} 100\n",
            "registry_observer_events_lost_total{stage=\"kernel_ring\",reason=\"connect_reserve_failed\"} 5\n",
            "registry_observer_events_lost_total{stage=\"kernel_ring\",reason=\"dns_load_failed\"} 0\n",
            "registry_observer_events_lost_total{stage=\"kernel_ring\",reason=\"tcp_track_failed\"} 0\n",
            "registry_observer_events_truncated_total{stage=\"kernel_ring\",reason=\"tcp_truncated\"} 7\n",
            "registry_observer_events_truncated_total{stage=\"kernel_ring\",reason=\"exec_args_missing\"} 0\n",
            "registry_observer_payload_streams_parsed_total{parser=\"dns_tcp\"} 0\n",
            "registry_observer_payload_streams_not_recognized_total 0\n",
            "registry_observer_events_file_lines_dropped_total 2\n",
            "registry_observer_parse_errors_total{parser=\"dns\"} 0\n",
            "registry_observer_attribution_failures_total{reason=\"process_gone\"} 0\n",
            "registry_observer_build_info{version=\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        health.read.records = 150;
        metrics.mirror_health(&health);
        let mut counters = PipelineCounters::default();
        counters.parse_errors.insert("dns", 1);
        counters.attribution.process_gone = 4;
        counters.attribution.cgroup_unknown = 1;
        metrics.mirror_pipeline(&counters);
        // The same counters at the next scrape add nothing.
        metrics.mirror_pipeline(&counters);
        let text = metrics.encode_openmetrics();
        assert!(text.contains("{stage=\"kernel_ring\"} 155\n"), "{text}");
        assert!(
            text.contains("parse_errors_total{parser=\"dns\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("{reason=\"process_gone\"} 4\n"), "{text}");
    }

    #[test]
    fn strongest_evidence_prefers_the_registry_named_in_the_connection() {
        assert_eq!(
            strongest(&[Evidence::DnsAnswer, Evidence::Connect]),
            Some(Evidence::Connect)
        );
        assert_eq!(
            strongest(&[Evidence::DnsAnswer, Evidence::Sendmsg]),
            Some(Evidence::Sendmsg)
        );
        // Order in the event does not matter.
        for pair in [
            [Evidence::TlsSni, Evidence::Connect],
            [Evidence::Connect, Evidence::TlsSni],
        ] {
            assert_eq!(strongest(&pair), Some(Evidence::TlsSni));
        }
        assert_eq!(
            strongest(&[Evidence::HttpHost, Evidence::HttpConnect]),
            Some(Evidence::HttpConnect)
        );
        assert_eq!(strongest(&[Evidence::DnsQuery]), Some(Evidence::DnsQuery));
        assert_eq!(strongest(&[]), None);
    }

    #[test]
    fn payload_parser_counts_mirror_per_parser_and_reason() {
        let metrics = Metrics::new();
        let mut stats = PayloadStats::default();
        stats.tls.parsed = 3;
        stats.tls.unparsed.insert("gap".into(), 2);
        stats.not_recognized = 4;
        let scrape = |stats: &PayloadStats| {
            metrics.mirror_pipeline(&PipelineCounters {
                payload_parsers: stats.clone(),
                ..PipelineCounters::default()
            })
        };
        scrape(&stats);
        scrape(&stats);
        stats.tls.parsed = 5;
        scrape(&stats);
        let text = metrics.encode_openmetrics();
        for expected in [
            "registry_observer_payload_streams_parsed_total{parser=\"tls\"} 5\n",
            "registry_observer_payload_streams_parsed_total{parser=\"http\"} 0\n",
            "registry_observer_payload_streams_unparsed_total{parser=\"tls\",reason=\"gap\"} 2\n",
            "registry_observer_payload_streams_not_recognized_total 4\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("parser=\"http\",reason"), "{text}");
    }
}
