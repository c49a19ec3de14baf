//! Stage 4 of a run: detach, drain, stop the sources, decide what is
//! decided only at the end (late pod names, on whose behalf), and build
//! the final report with the same function as the snapshots.

use std::{sync::Arc, time::SystemTime};

use anyhow::Context;
use observer_report::{Report, observer::KubernetesState};
use observer_state::record::RunEnd;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{
    bpf::{
        load::{Probes, pins::PinDir},
        read::{KernelCounters, ReadCounters},
    },
    correlate,
    outputs::{Live, durable::Durable},
    pipeline::Pipeline,
    run::{
        endpoints::Endpoints,
        report::{RunFacts, StageCounts, Taken, node_report},
    },
    sources::{
        cri::{CriFinal, CriWatcher},
        kubernetes::KubernetesSource,
        pull_intent::IntentLog,
    },
};

/// Everything running while the agent observes, in the order it stops.
pub struct Running {
    pub probes: Probes,
    /// Service mode: the pin dir's lock, released last.
    pub pins: Option<PinDir>,
    pub stop: watch::Sender<bool>,
    /// The ring's counts (the pipeline reads the ring itself).
    pub read: Arc<ReadCounters>,
    pub resolver: Option<JoinHandle<()>>,
    pub reloader: JoinHandle<()>,
    pub endpoints: Endpoints,
    pub pipeline: JoinHandle<Pipeline<Live>>,
    pub cri: CriWatcher,
    pub kubernetes: KubernetesSource,
    pub stop_intents: oneshot::Sender<()>,
    pub intents: JoinHandle<(IntentLog, u64)>,
    pub kernel_counters: Arc<KernelCounters>,
    /// With `--state-dir`: the ticker (counts and fsync each second) and
    /// the report.json writer.
    pub durable_tasks: Vec<JoinHandle<()>>,
}

/// Stops everything and returns the final report. Detaches first, then
/// drains: nothing can arrive after the final drain.
/// Also hands back the durable record's writer, for the run's end record.
pub async fn stop(
    running: Running,
    facts: &RunFacts,
    command_exit_code: Option<i32>,
    run_end: RunEnd,
) -> anyhow::Result<(Report, Option<Durable>)> {
    let Running {
        probes,
        pins,
        stop,
        read,
        resolver,
        reloader,
        endpoints,
        pipeline,
        cri,
        kubernetes,
        stop_intents,
        intents,
        kernel_counters,
        durable_tasks,
    } = running;
    for task in durable_tasks {
        task.abort();
        let _ = task.await;
    }
    // Without pins this detaches; pinned programs stay attached.
    drop(probes);
    let _ = stop.send(true);
    if let Some(resolver) = resolver {
        resolver.abort();
        let _ = resolver.await;
    }
    reloader.abort();
    let _ = reloader.await;
    endpoints.stopped().await;
    let mut pipeline = pipeline.await.context("the pipeline failed")?;
    let CriFinal {
        directory: pod_directory,
        images,
        status: cri_status,
    } = cri.finish().await;
    let kubernetes_status = kubernetes.finish().await;
    if kubernetes_status.state == KubernetesState::Unavailable {
        eprintln!(
            "registry-observer: warning: the Kubernetes API was unavailable ({}); pulls are not \
             joined to kubelet events or pod specs",
            kubernetes_status
                .reason
                .as_deref()
                .unwrap_or("no reason recorded")
        );
    }
    // Both sources' final intents are queued: take them, and stop.
    let _ = stop_intents.send(());
    let (intent_log, intents_dropped) =
        intents.await.context("the pull-intent collector failed")?;
    // Before the policy judges again in the report: a pod named late can
    // change the component and namespace an allow entry matches.
    correlate::name_pods_late(
        &mut pipeline,
        &pod_directory,
        cri_status.state == observer_report::observer::CriState::Connected,
    );
    // After the final listing, so containers created after a pull count.
    let on_behalf_of = correlate::decide_on_behalf_of(
        &mut pipeline,
        &intent_log,
        intents_dropped,
        &images,
        &pod_directory,
    );
    let read_stats = read.snapshot();
    let kernel = kernel_counters.since_start();
    let snapshot = pipeline.snapshot(SystemTime::now());
    let events_file_dropped = pipeline.outputs.events_log.finish();
    let durable = pipeline.outputs.durable.take();
    let state_dir_losses = durable.as_ref().map_or((0, 0), |d| {
        let losses = d.losses();
        (losses.records, losses.segments_removed)
    });
    let counts = StageCounts {
        read: read_stats,
        kernel,
        events_file_dropped,
        cri: cri_status,
        kubernetes: kubernetes_status,
        on_behalf_of,
        command_exit_code,
        state_dir_losses,
        run_end: Some(run_end),
        // For the durable record's ticks only; the run's end record reads
        // the counters itself (`finish_record`).
        kernel_lost_raw: None,
    };
    drop(pins);
    Ok((
        node_report(facts, snapshot, counts, Taken::AtTheEnd),
        durable,
    ))
}
