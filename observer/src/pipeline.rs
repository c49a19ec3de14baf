//! The stages between the reader and the report, run on one thread:
//! decode -> join (connections, process lineage) -> classify -> (scope) ->
//! attribute -> record -> export.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::SystemTime};

use tokio::sync::mpsc;

use hickory_proto::op::ResponseCode;

use crate::{
    attribute::{
        Attributor,
        images::ImageLedger,
        on_behalf_of::{self, Decision, OnBehalfOfStats},
        pods::PodDirectory,
        pull_intent::{IntentLog, PullIntent},
    },
    classify::{Classifier, registries_conf::RegistriesConf},
    clock::Clock,
    connections::{Connections, Joined},
    decode::{self, Observation},
    events_log::{EventsLog, Line},
    export::{self, Console},
    metrics::Metrics,
    phase::PhaseTimeline,
    policy::Policy,
    read::Input,
    record::Recorder,
    scope::Scope,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records that did not decode, by parser (`record`, `dns`; TLS, HTTP
    /// and DNS over TCP are counted in the connection stage's stats).
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// Registry events outside the observed command (mode `command`).
    pub out_of_scope: u64,
}

const IPPROTO_TCP: u32 = 6;

pub struct Pipeline {
    pub connections: Connections,
    pub classifier: Classifier,
    pub attributor: Attributor,
    pub recorder: Recorder,
    pub scope: Option<Scope>,
    pub console: Console,
    pub clock: Clock,
    pub phases: PhaseTimeline,
    pub policy: Policy,
    /// What the catalog imported from registries.conf, for the report.
    pub registries_conf: Option<RegistriesConf>,
    pub metrics: Arc<Metrics>,
    pub events_log: EventsLog,
    pub stats: PipelineStats,
}

impl Pipeline {
    /// Runs until every sender of `queue` is gone, then hands itself back
    /// so the caller can build the report.
    pub fn run(mut self, mut queue: mpsc::Receiver<Input>) -> Pipeline {
        while let Some(input) = queue.blocking_recv() {
            self.handle(input);
        }
        self
    }

    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Kernel(bytes) => {
                self.metrics.event_received(SystemTime::now());
                match decode::decode(&bytes) {
                    Ok(Some(observation)) => self.join(observation),
                    Ok(None) => {}
                    Err(error) => self.count_error(&error),
                }
            }
            Input::Resolved {
                name,
                addresses,
                boot_ns,
            } => self.classifier.learn_resolved(&name, &addresses, boot_ns),
            Input::Reload(setup) => {
                let setup = *setup;
                self.classifier.set_catalog(setup.catalog);
                self.policy = setup.policy;
                self.registries_conf = setup.registries_conf;
                self.attributor.set_rules(setup.component_rules);
            }
            Input::Phase(change) => {
                let marker = self.phases.switch(&change).clone();
                self.console.line(&export::format_phase_line(&marker));
                self.events_log.send(Line::Phase {
                    time: change.at,
                    marker,
                });
            }
        }
    }

    fn count_error(&mut self, error: &decode::DecodeError) {
        *self.stats.parse_errors.entry(error.parser()).or_default() += 1;
        self.metrics.parse_error(error.parser());
    }

    /// Events that describe a process or a connection rather than an
    /// attempt feed their tables; payload findings come back as
    /// observations of the connecting process.
    fn join(&mut self, observation: Observation) {
        match &observation {
            Observation::Exec { .. } | Observation::Fork { .. } | Observation::Exit { .. } => {
                self.attributor.follow(&observation);
            }
            Observation::TcpPayload { .. } => {
                let joined = self.connections.segment(&observation);
                self.metrics.payload_parsers(self.connections.stats());
                match joined {
                    Joined::Observation(derived) => self.observe(&derived),
                    Joined::DnsError(error) => self.count_error(&error),
                    Joined::Nothing => {}
                }
            }
            Observation::ConnectDone {
                cookie, outcome, ..
            } => {
                self.connections.ended_handshake(*cookie, *outcome);
                self.recorder.connection_outcome(*cookie, &outcome.name());
            }
            Observation::Connect {
                actor,
                dest,
                port,
                cookie,
                sendmsg: false,
                protocol: IPPROTO_TCP,
            } => {
                self.connections
                    .opened(*cookie, actor, SocketAddr::new(*dest, *port));
                // Opening may evict a connection whose stream is judged then.
                self.metrics.payload_parsers(self.connections.stats());
                self.observe(&observation);
            }
            _ => self.observe(&observation),
        }
    }

    /// At the end of the run: names the pods of attempts recorded before
    /// the CRI listing had them, from the final listing (tombstones
    /// included), so a pod that lived two seconds still has its name.
    pub fn name_pods_late(&mut self, directory: &Arc<PodDirectory>, cri_answered: bool) {
        let attributor = &mut self.attributor;
        self.recorder.rename_pods(|owner, recorded, process| {
            attributor.name_late(directory, cri_answered, owner, recorded, process)
        });
    }

    /// At the end of the run, after the pods are named: on whose behalf
    /// each runtime or tool attempt was made, from the run's pull intents,
    /// the CRI's image presence and the final pod listing. Returns the
    /// counters for the report (intents received and dropped included).
    pub fn decide_on_behalf_of(
        &mut self,
        intents: &IntentLog,
        intents_dropped: u64,
        images: &ImageLedger,
        directory: &PodDirectory,
    ) -> OnBehalfOfStats {
        let intents_held: Vec<PullIntent> = intents.intents().cloned().collect();
        let context = on_behalf_of::Context {
            intents: &intents_held,
            images,
            pods: directory,
            catalog: self.classifier.catalog(),
            registries_conf: self.registries_conf.as_ref(),
        };
        let mut stats = OnBehalfOfStats {
            intents: intents.seen().clone(),
            intents_dropped: intents_dropped + intents.evicted(),
            images_dropped: images.dropped(),
            image_listings: images.listings(),
            ..OnBehalfOfStats::default()
        };
        let attributor = &mut self.attributor;
        self.recorder.decide_on_behalf_of(|attempt| {
            let decision = on_behalf_of::decide(attempt, &context);
            decision.count_into(&mut stats);
            if decision == Decision::RuntimeUnattributed {
                attributor.count_runtime_pull_unattributed();
            }
            attempt.on_behalf_of = match decision {
                Decision::Attributed(found) => Some(*found),
                _ => None,
            };
        });
        stats
    }

    fn observe(&mut self, observation: &Observation) {
        if let Observation::DnsResponse {
            actor, name, rcode, ..
        } = observation
            && self.classifier.is_registry(name)
        {
            self.recorder.dns_answered(actor.cgroup_id, name);
            if *rcode != ResponseCode::NoError {
                self.recorder
                    .dns_outcome(actor.cgroup_id, name, &decode::dns_outcome_name(*rcode));
            }
        }
        let Some(matched) = self.classifier.classify(observation) else {
            return;
        };
        let actor = observation.actor();
        if let Some(scope) = &self.scope
            && actor.cgroup_id != scope.cgroup_id
        {
            let path = self.attributor.cgroup_path(actor.cgroup_id, None);
            if !scope.contains(actor.cgroup_id, path.as_deref()) {
                self.stats.out_of_scope += 1;
                return;
            }
        }
        let origin = self.attributor.attribute(actor);
        let failures = self.attributor.stats();
        self.metrics
            .attribution(failures.process_gone, failures.cgroup_unknown);
        let at = self.clock.wall(actor.boot_ns);
        self.console
            .line(&export::format_line(at, &matched, &origin));
        // Recorded under the phase in force when the event happened, not
        // when it was processed. The handshake may have ended before the
        // payload that named the registry arrived.
        let phase = self.phases.phase_at(actor.boot_ns);
        let handshake_outcome = matched
            .cookie
            .and_then(|cookie| self.connections.outcome(cookie))
            .map(|outcome| outcome.name());
        let attempt = self.recorder.record_with_outcome(
            &matched,
            &origin,
            phase,
            at,
            handshake_outcome.as_deref(),
        );
        // Judged before it is counted or logged: metrics and the events
        // file carry the verdict.
        self.policy.judge(attempt);
        self.metrics.record_event(attempt, &matched.evidence);
        if self.events_log.enabled() {
            self.events_log.send(Line::Attempt {
                time: at,
                attempt: Box::new(attempt.clone()),
            });
        }
    }
}
