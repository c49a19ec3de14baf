//! Decisions taken when a report is built, across the whole record rather
//! than one event: on whose behalf a runtime or tool attempt was made
//! (`on_behalf_of`), from the pull intents, images and pods the sources
//! gathered.

pub mod on_behalf_of;

use std::sync::Arc;

use observer_report::observer::OnBehalfOfStats;

use crate::{
    correlate::on_behalf_of::Decision,
    pipeline::{Outputs, Pipeline},
    sources::{
        images::ImageLedger,
        pods::PodDirectory,
        pull_intent::{IntentLog, PullIntent},
    },
};

/// At the end of the run: names the pods of attempts recorded before the
/// CRI listing had them, from the final listing (tombstones included), so
/// a pod that lived two seconds still has its name.
pub fn name_pods_late<O: Outputs>(
    pipeline: &mut Pipeline<O>,
    directory: &Arc<PodDirectory>,
    cri_answered: bool,
) {
    let attributor = &mut pipeline.attributor;
    pipeline.recorder.rename_pods(|owner, recorded, process| {
        attributor.name_late(directory, cri_answered, owner, recorded, process)
    });
}

/// At the end of the run, after the pods are named: on whose behalf each
/// runtime or tool attempt was made, from the run's pull intents, the
/// CRI's image presence and the final pod listing. Returns the counters
/// for the report (intents received and dropped included).
pub fn decide_on_behalf_of<O: Outputs>(
    pipeline: &mut Pipeline<O>,
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
        catalog: pipeline.classifier.catalog(),
        registries_conf: pipeline.registries_conf.as_ref(),
    };
    let mut stats = OnBehalfOfStats {
        intents: intents.seen().clone(),
        intents_dropped: intents_dropped + intents.evicted(),
        images_dropped: images.dropped(),
        image_listings: images.listings(),
        ..OnBehalfOfStats::default()
    };
    let attributor = &mut pipeline.attributor;
    pipeline.recorder.decide_on_behalf_of(|attempt| {
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
