//! The stages between the reader and the report, run on one thread:
//! decode -> classify -> (scope) -> attribute -> record -> export.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::mpsc;

use crate::{
    attribute::{Attributor, pods::PodDirectory},
    classify::Classifier,
    clock::Clock,
    decode::{self, Observation},
    export::{self, Console},
    read::Input,
    record::Recorder,
    scope::Scope,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Records that did not decode, by parser (`record`, `dns`).
    pub parse_errors: BTreeMap<&'static str, u64>,
    /// Registry events outside the observed command (mode `command`).
    pub out_of_scope: u64,
}

pub struct Pipeline {
    pub classifier: Classifier,
    pub attributor: Attributor,
    pub recorder: Recorder,
    pub scope: Option<Scope>,
    pub console: Console,
    pub clock: Clock,
    pub phase: String,
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
            Input::Kernel(bytes) => match decode::decode(&bytes) {
                Ok(Some(observation)) => self.observe(&observation),
                Ok(None) => {}
                Err(error) => *self.stats.parse_errors.entry(error.parser()).or_default() += 1,
            },
            Input::Resolved {
                name,
                addresses,
                boot_ns,
            } => self.classifier.learn_resolved(&name, &addresses, boot_ns),
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

    fn observe(&mut self, observation: &Observation) {
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
        self.console
            .line(&export::format_line(at, &matched, &origin));
        self.recorder.record(&matched, &origin, &self.phase, at);
    }
}
