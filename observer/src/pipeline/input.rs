//! What flows into the pipeline: kernel records straight from the ring
//! ([`KernelFeed`]), and in one queue, in order: resolved addresses,
//! reloaded settings, phase changes, and requests for a snapshot of its
//! state. The ring is drained before each phase change or snapshot is
//! handled, so either lands behind every event captured before it was
//! asked for.

use std::time::SystemTime;

use bytes::Bytes;
use observer_report::phase::PhaseSource;
use observer_state::record::RunCounts;
use tokio::sync::{mpsc, oneshot};

use crate::{
    clock,
    pipeline::{
        attribute::component_rules::ComponentRule,
        classify::{Catalog, registries_conf::RegistriesConf},
        phase::{PhaseChange, PhaseName, PhaseNameError},
        snapshot::{PipelineCounters, PipelineSnapshot},
        verdict::Policy,
    },
    sources::resolver::Resolved,
};

/// Where kernel records come from while the agent runs: the ring buffer
/// (`bpf::read::KernelRing`), which keeps each record until the pipeline
/// has applied it. Tests and benchmarks send [`Input::Kernel`] instead.
pub trait KernelFeed {
    /// Applies at most `max` records, each with its ring position; returns
    /// how many were read.
    fn drain(&mut self, max: usize, apply: &mut dyn FnMut(&[u8], u64)) -> usize;
}

impl KernelFeed for crate::bpf::read::KernelRing {
    fn drain(&mut self, max: usize, apply: &mut dyn FnMut(&[u8], u64)) -> usize {
        crate::bpf::read::KernelRing::drain(self, max, apply)
    }
}

#[derive(Debug)]
pub enum Input {
    /// One raw ring-buffer record, without a ring position (tests,
    /// benchmarks).
    Kernel(Bytes),
    /// The agent resolved a catalog name itself.
    Resolved(Resolved),
    /// Reloaded settings (SIGHUP): new catalog and policy; what was
    /// recorded so far stays.
    Reload(Box<Settings>),
    /// `mark NAME` or `POST /phase`: later events belong to a new phase.
    Phase(PhaseChange),
    /// `GET /report`: a copy of the state for a report, taken now.
    Snapshot(oneshot::Sender<PipelineSnapshot>),
    /// `GET /metrics`: the stages' counters, read now.
    Counters(oneshot::Sender<PipelineCounters>),
    /// Once a second with `--state-dir`: the run's counts, to make durable.
    Tick(RunCounts),
}

impl From<Bytes> for Input {
    fn from(record: Bytes) -> Input {
        Input::Kernel(record)
    }
}

impl From<Resolved> for Input {
    fn from(resolved: Resolved) -> Input {
        Input::Resolved(resolved)
    }
}

/// What the pipeline runs with, built from the config file and the command
/// line (`setup::config`); rebuilt on reload.
#[derive(Clone, Debug)]
pub struct Settings {
    pub catalog: Catalog,
    pub policy: Policy,
    /// None when the import is turned off.
    pub registries_conf: Option<RegistriesConf>,
    /// `--component-rule`s first, then the config's: first match wins, so
    /// the command line can override a shared file for one run.
    pub component_rules: Vec<ComponentRule>,
}

/// Why a request did not reach the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct ShuttingDown;

/// Why a phase change was refused: the caller's mistake, or the agent's
/// state (the HTTP endpoint answers 400 and 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhaseRequestError {
    #[error(transparent)]
    InvalidName(#[from] PhaseNameError),
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
}

/// Sends requests into the running pipeline; shared by the control socket
/// and the HTTP endpoint. It holds a weak sender: an idle HTTP keep-alive
/// connection must not keep the pipeline's queue open at shutdown.
#[derive(Clone)]
pub struct PipelineHandle {
    queue: mpsc::WeakSender<Input>,
}

impl PipelineHandle {
    pub fn new(queue: mpsc::WeakSender<Input>) -> PipelineHandle {
        PipelineHandle { queue }
    }

    /// Queues a phase change behind the events already read; returns the
    /// reply text. Events stamped before now stay in the previous phase.
    pub async fn switch_phase(
        &self,
        name: &str,
        source: PhaseSource,
    ) -> Result<String, PhaseRequestError> {
        let name = PhaseName::parse(name.trim())?;
        let at = SystemTime::now();
        let change = PhaseChange {
            name: name.clone(),
            source,
            boot_ns: clock::boot_ns(),
            at,
        };
        self.send(Input::Phase(change)).await?;
        Ok(format!(
            "phase {name} started at {}",
            humantime::format_rfc3339_millis(at)
        ))
    }

    /// A copy of the pipeline's state, taken behind the events already
    /// read; the pipeline goes on observing.
    pub async fn snapshot(&self) -> Result<PipelineSnapshot, ShuttingDown> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Snapshot(reply)).await?;
        answer.await.map_err(|_| ShuttingDown)
    }

    /// Hands the pipeline the run's counts to make durable.
    pub async fn tick(&self, counts: RunCounts) -> Result<(), ShuttingDown> {
        self.send(Input::Tick(counts)).await
    }

    /// The pipeline's counters, read behind the events already read.
    pub async fn counters(&self) -> Result<PipelineCounters, ShuttingDown> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Counters(reply)).await?;
        answer.await.map_err(|_| ShuttingDown)
    }

    async fn send(&self, input: Input) -> Result<(), ShuttingDown> {
        let queue = self.queue.upgrade().ok_or(ShuttingDown)?;
        queue.send(input).await.map_err(|_| ShuttingDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phase_requests_are_refused_by_kind() {
        let (queue, mut inputs) = mpsc::channel(4);
        let handle = PipelineHandle::new(queue.downgrade());
        let reply = handle
            .switch_phase(" upgrade\n", PhaseSource::Http)
            .await
            .unwrap();
        assert!(reply.starts_with("phase upgrade started at "), "{reply}");
        assert!(matches!(inputs.recv().await, Some(Input::Phase(_))));

        let invalid = handle
            .switch_phase("Not Valid", PhaseSource::Http)
            .await
            .unwrap_err();
        assert!(
            matches!(&invalid, PhaseRequestError::InvalidName(e) if e.given == "Not Valid"),
            "{invalid:?}"
        );
        assert!(invalid.to_string().starts_with("invalid phase name"));

        // The pipeline is gone: its queue's last strong sender dropped.
        drop(queue);
        let stopping = handle
            .switch_phase("upgrade", PhaseSource::Http)
            .await
            .unwrap_err();
        assert_eq!(stopping, PhaseRequestError::ShuttingDown(ShuttingDown));
        assert_eq!(stopping.to_string(), "the agent is shutting down");
    }
}
