//! The stages between the reader and the report, run on one thread, in
//! import order: decode -> join (`connections`, with `payload`'s parsers,
//! and process lineage in `attribute`) -> `classify` -> `scope` ->
//! `attribute` -> `record` -> `verdict`; `phase` says which phase an event
//! belongs to. `input` is what the queue carries; `snapshot` copies the
//! state a report is built from, at any time.
//!
//! The pipeline hands every event to an [`Outputs`] it is given (console,
//! events file, metrics: `outputs`), so it never imports where its results
//! go.

pub mod attribute;
pub mod classify;
pub mod connections;
pub mod decode;
pub mod input;
pub mod payload;
pub mod phase;
pub mod record;
pub mod scope;
pub mod snapshot;
pub mod verdict;

use std::{collections::BTreeMap, net::SocketAddr, time::SystemTime};

use hickory_proto::op::ResponseCode;
use observer_report::{Attempt, PhaseMarker};
use observer_state::record::RunCounts;
use tokio::sync::mpsc;

use crate::{
    clock::Clock,
    pipeline::{
        attribute::{Attributor, Origin},
        classify::{Classifier, Match, registries_conf::RegistriesConf},
        connections::{Connections, Joined},
        decode::Observation,
        input::{Input, KernelFeed},
        phase::PhaseTimeline,
        record::Recorder,
        scope::Scope,
        verdict::Policy,
    },
};

/// Where the pipeline's results go as they happen. Implemented by
/// `outputs::Live`; a test or a benchmark can count instead.
/// Counters (parse errors, payload parsers, attribution) are not output
/// per event: `/metrics` reads them at scrape time (`Input::Counters`).
pub trait Outputs {
    /// An attempt was recorded and judged: `attempt` is the merged entry,
    /// `evidence` this event's own.
    fn attempt(&mut self, at: SystemTime, matched: &Match, origin: &Origin, attempt: &Attempt);
    /// An outcome (a handshake's end, a DNS answer's rcode) changed an
    /// attempt after its event: only the durable record wants it.
    fn attempt_updated(&mut self, attempt: &Attempt);
    /// A registry event that would have started an attempt beyond the
    /// table's bound: it is in no attempt, only counted.
    fn not_recorded(&mut self, at: SystemTime, matched: &Match, origin: &Origin);
    /// A new phase began.
    fn phase(&mut self, at: SystemTime, marker: &PhaseMarker);
    /// Once a second (with `--state-dir`): the run's counts; what was
    /// output so far is made durable. True asks for a [`Outputs::checkpoint`].
    fn tick(&mut self, counts: &RunCounts) -> bool;
    /// The whole state, for the durable record to compact itself.
    fn checkpoint(&mut self, attempts: &[Attempt], phases: &[PhaseMarker]);
    /// The ring position of the kernel record whose results follow (None:
    /// a record from the queue): the durable record notes it, so a
    /// restart skips records whose effect it already holds.
    fn ring_position(&mut self, _position: Option<u64>) {}
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records that did not decode, by parser (`record`, `dns`; TLS, HTTP
    /// and DNS over TCP are counted in the connection stage's stats).
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// Registry events outside the observed command (mode `command`).
    pub out_of_scope: u64,
    /// When the latest kernel record arrived.
    pub last_event_at: Option<SystemTime>,
}

const IPPROTO_TCP: u32 = 6;
/// Kernel records per round, between looks at the queue: a burst cannot
/// hold back a snapshot or a phase change for long.
const RING_BATCH: usize = 4096;
/// Queued messages per round, between drains of the ring.
const QUEUE_BATCH: usize = 256;
/// At the end, at most this many batches: more than a full default ring
/// (4 MiB of records of at least 64 bytes).
const FINAL_DRAIN_ROUNDS: usize = 32;

pub struct Pipeline<O: Outputs> {
    pub connections: Connections,
    pub classifier: Classifier,
    pub attributor: Attributor,
    pub recorder: Recorder,
    pub scope: Option<Scope>,
    pub clock: Clock,
    pub phases: PhaseTimeline,
    pub policy: Policy,
    /// What the catalog imported from registries.conf, for the report.
    pub registries_conf: Option<RegistriesConf>,
    pub outputs: O,
    pub stats: PipelineStats,
}

impl<O: Outputs> Pipeline<O> {
    /// Reads `feed` and `queue` until every sender of `queue` is gone,
    /// drains `feed` once more (the programs are detached or left pinned
    /// by then), and hands itself back so the caller can build the report.
    pub fn run<F: KernelFeed>(mut self, mut feed: F, mut queue: mpsc::Receiver<Input>) -> Self {
        loop {
            // Polled like the kernel submits, without wakeups: a ring read
            // to its end waits a drain interval, so records are handled in
            // batches instead of a thread spinning on every one; a full
            // batch means more are waiting.
            let mut busy = self.drain(&mut feed) == RING_BATCH;
            for _ in 0..QUEUE_BATCH {
                match queue.try_recv() {
                    Ok(input) => {
                        busy = true;
                        if matches!(input, Input::Phase(_) | Input::Snapshot(_) | Input::Tick(_)) {
                            self.drain(&mut feed);
                        }
                        self.handle(input);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // Bounded: pinned programs (service mode) keep
                        // producing; what they add now is the next
                        // agent's to drain.
                        for _ in 0..FINAL_DRAIN_ROUNDS {
                            if self.drain(&mut feed) == 0 {
                                break;
                            }
                        }
                        return self;
                    }
                }
            }
            if !busy {
                std::thread::sleep(crate::bpf::read::DRAIN_INTERVAL);
            }
        }
    }

    /// One batch of kernel records; returns how many were read.
    fn drain<F: KernelFeed>(&mut self, feed: &mut F) -> usize {
        let read = feed.drain(RING_BATCH, &mut |record, position| {
            self.outputs.ring_position(Some(position));
            self.kernel_record(record);
        });
        if read > 0 {
            self.outputs.ring_position(None);
        }
        read
    }

    fn kernel_record(&mut self, record: &[u8]) {
        self.stats.last_event_at = Some(SystemTime::now());
        match decode::decode(record) {
            Ok(Some(observation)) => self.join(observation),
            Ok(None) => {}
            Err(error) => self.count_error(&error),
        }
    }

    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Kernel(bytes) => self.kernel_record(&bytes),
            Input::Resolved(resolved) => self.classifier.learn_resolved(
                &resolved.name,
                &resolved.addresses,
                resolved.boot_ns,
            ),
            Input::Reload(settings) => {
                let settings = *settings;
                self.classifier.set_catalog(settings.catalog);
                self.policy = settings.policy;
                self.registries_conf = settings.registries_conf;
                self.attributor.set_rules(settings.component_rules);
            }
            Input::Phase(change) => {
                let marker = self.phases.switch(&change).clone();
                self.outputs.phase(change.at, &marker);
            }
            Input::Snapshot(reply) => {
                // The asker may have given up (a closed connection): the
                // copy is then simply dropped.
                let _ = reply.send(self.snapshot(SystemTime::now()));
            }
            Input::Counters(reply) => {
                let _ = reply.send(self.counters());
            }
            Input::Tick(counts) => {
                if self.outputs.tick(&counts) {
                    // The recorder's own attempts, as the spool's attempt
                    // records hold them (outcomes closed only in reports).
                    let phases = self.phases.markers();
                    self.outputs.checkpoint(self.recorder.attempts(), &phases);
                }
            }
        }
    }

    fn count_error(&mut self, error: &decode::DecodeError) {
        *self.stats.parse_errors.entry(error.parser()).or_default() += 1;
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
                if let Some(attempt) = self.recorder.connection_outcome(*cookie, &outcome.name()) {
                    self.outputs.attempt_updated(attempt);
                }
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
                self.observe(&observation);
            }
            _ => self.observe(&observation),
        }
    }

    fn observe(&mut self, observation: &Observation) {
        if let Observation::DnsResponse {
            actor, name, rcode, ..
        } = observation
            && self.classifier.is_registry(name)
        {
            self.recorder.dns_answered(actor.cgroup_id, name);
            if *rcode != ResponseCode::NoError
                && let Some(attempt) = self.recorder.dns_outcome(
                    actor.cgroup_id,
                    name,
                    &decode::dns_outcome_name(*rcode),
                )
            {
                self.outputs.attempt_updated(attempt);
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
        let at = self.clock.wall(actor.boot_ns);
        // Recorded under the phase in force when the event happened, not
        // when it was processed. The handshake may have ended before the
        // payload that named the registry arrived.
        let phase = self.phases.phase_at(actor.boot_ns);
        let handshake_outcome = matched
            .cookie
            .and_then(|cookie| self.connections.outcome(cookie))
            .map(|outcome| outcome.name());
        let Some(attempt) = self.recorder.record_with_outcome(
            &matched,
            &origin,
            phase,
            at,
            handshake_outcome.as_deref(),
        ) else {
            self.outputs.not_recorded(at, &matched, &origin);
            return;
        };
        // Judged before it is output: metrics and the events file carry
        // the verdict.
        self.policy.judge(attempt);
        self.outputs.attempt(at, &matched, &origin, attempt);
    }
}
