//! Pull intents: signs that a pod on this node needs an image at a given
//! time. A container runtime's registry contact is true but useless to the
//! user ("containerd did it"); intents are what lets a later stage say which
//! pod it was done for (`on_behalf_of`).
//!
//! Sources push intents through an [`IntentSink`]; the correlating stage
//! drains the [`IntentFeed`]. Two sources exist:
//! - the CRI watcher: a container that appeared in a listing, with its image
//!   and creation time (the kubelet pulls just before CreateContainer);
//! - the Kubernetes API: the kubelet's `Pulling` events for this node, joined
//!   to the pod's stored spec (its effective pull policy and why).
//!
//! The channel is bounded: a burst beyond it is counted in `dropped`, never
//! lost silently and never blocking a source.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use observer_report::on_behalf_of::{IntentSignal, PolicyJoin};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// How far in time an intent's signal may lie from the contacts it
/// explains (`correlate::on_behalf_of`); the CRI watcher uses the first.
///
/// A container is created right after its pull returns, so its creation
/// follows the contact. 2 s before the first contact absorbs the runtime's
/// and the agent's clocks and event batching; 10 min after the last one
/// covers unpacking a large image (its last registry contact may be the
/// start of a long blob download).
pub const CONTAINER_CREATED_BEFORE: Duration = Duration::from_secs(2);
pub const CONTAINER_CREATED_AFTER: Duration = Duration::from_secs(600);
/// The kubelet's `Pulling` event precedes the runtime's contact: by up to
/// a minute when pulls queue behind each other (serialized pulls, the
/// default); 2 s after the last contact absorbs event timestamps, which
/// the API server rounds to seconds.
pub const KUBELET_PULLING_BEFORE: Duration = Duration::from_secs(60);
pub const KUBELET_PULLING_AFTER: Duration = Duration::from_secs(2);

/// The pod an intent is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntentPod {
    /// None when the source does not say (an event names the pod by
    /// namespace and name; its `involvedObject.uid` may be empty).
    pub uid: Option<String>,
    pub namespace: String,
    pub name: String,
}

/// One sign that `pod` needs `image` around `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullIntent {
    pub pod: IntentPod,
    /// The container's name in the pod spec, when the source says.
    pub container: Option<String>,
    /// The image as the spec (or the runtime) names it.
    pub image: String,
    pub at: SystemTime,
    pub signal: IntentSignal,
    /// Known when the source read the pod spec (the Kubernetes API).
    pub policy: Option<PolicyJoin>,
}

/// Intents queued before the correlating stage drains them; a kubelet
/// starting a node's pods makes a few hundred at most.
pub const INTENT_QUEUE: usize = 4096;

/// The sending side, cloned into each source. Never blocks.
#[derive(Clone)]
pub struct IntentSink {
    sender: mpsc::Sender<PullIntent>,
    dropped: Arc<AtomicU64>,
}

impl IntentSink {
    /// Queues `intent`; a full queue (or a stopped receiver) counts it as
    /// dropped instead of blocking the source.
    pub fn send(&self, intent: PullIntent) {
        if self.sender.try_send(intent).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The receiving side, held by the correlating stage.
pub struct IntentFeed {
    receiver: mpsc::Receiver<PullIntent>,
    dropped: Arc<AtomicU64>,
}

impl IntentFeed {
    /// Everything queued now, without waiting.
    pub fn drain(&mut self) -> Vec<PullIntent> {
        let mut intents = Vec::new();
        while let Ok(intent) = self.receiver.try_recv() {
            intents.push(intent);
        }
        intents
    }

    /// The next intent; None once every sink is gone (every source ended).
    pub async fn recv(&mut self) -> Option<PullIntent> {
        self.receiver.recv().await
    }

    /// Intents that did not fit in the queue, for the report.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Intents kept for the report-time correlation: a node's pod starts over
/// a long upgrade, far more than a run's registry contacts need.
pub const MAX_LOGGED_INTENTS: usize = 16_384;

/// The intents of the run, oldest first, bounded: past the bound the oldest
/// go (counted), since a pull is matched to intents near it in time.
#[derive(Debug)]
pub struct IntentLog {
    intents: VecDeque<PullIntent>,
    max: usize,
    seen: BTreeMap<IntentSignal, u64>,
    evicted: u64,
}

impl Default for IntentLog {
    fn default() -> IntentLog {
        IntentLog::with_max(MAX_LOGGED_INTENTS)
    }
}

impl IntentLog {
    pub fn with_max(max: usize) -> IntentLog {
        IntentLog {
            intents: VecDeque::new(),
            max: max.max(1),
            seen: BTreeMap::new(),
            evicted: 0,
        }
    }

    pub fn push(&mut self, intent: PullIntent) {
        *self.seen.entry(intent.signal).or_default() += 1;
        if self.intents.len() >= self.max {
            self.intents.pop_front();
            self.evicted += 1;
        }
        self.intents.push_back(intent);
    }

    /// Intents received, by signal (evicted ones included).
    pub fn seen(&self) -> &BTreeMap<IntentSignal, u64> {
        &self.seen
    }

    /// Intents pushed out of the log by newer ones.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn intents(&self) -> impl Iterator<Item = &PullIntent> {
        self.intents.iter()
    }
}

/// Drains `feed` into a log until every sink is gone or `stop` fires
/// (then what is already queued is still taken); returns the log and the
/// queue's drop count. Runs on its own task: sources never wait on the
/// correlation, and the event path never sees intents at all.
pub async fn collect(
    mut feed: IntentFeed,
    mut log: IntentLog,
    stop: oneshot::Receiver<()>,
) -> (IntentLog, u64) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            received = feed.recv() => match received {
                Some(intent) => log.push(intent),
                None => break,
            },
            _ = &mut stop => {
                for intent in feed.drain() {
                    log.push(intent);
                }
                break;
            }
        }
    }
    (log, feed.dropped())
}

pub fn intent_channel(capacity: usize) -> (IntentSink, IntentFeed) {
    let (sender, receiver) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        IntentSink {
            sender,
            dropped: Arc::clone(&dropped),
        },
        IntentFeed { receiver, dropped },
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn intent(name: &str) -> PullIntent {
        PullIntent {
            pod: IntentPod {
                uid: None,
                namespace: "ns".into(),
                name: name.into(),
            },
            container: Some("c".into()),
            image: "quay.io/a/b:latest".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            signal: IntentSignal::KubeletPulling,
            policy: None,
        }
    }

    #[tokio::test]
    async fn the_log_keeps_the_newest_counts_every_signal_and_ends_with_its_sources() {
        let (sink, feed) = intent_channel(8);
        let (_stop, stopped) = oneshot::channel();
        let collector = tokio::spawn(collect(feed, IntentLog::with_max(2), stopped));
        for name in ["a", "b", "c"] {
            sink.send(intent(name));
        }
        sink.send(PullIntent {
            signal: IntentSignal::CriContainerCreated,
            ..intent("d")
        });
        drop(sink);
        let (log, dropped) = collector.await.unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(log.evicted(), 2);
        let names: Vec<&str> = log.intents().map(|i| i.pod.name.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
        assert_eq!(
            log.seen(),
            &BTreeMap::from([
                (IntentSignal::CriContainerCreated, 1),
                (IntentSignal::KubeletPulling, 3)
            ])
        );
    }

    /// A source still alive (a sink kept) cannot hold the report back:
    /// stopping takes what is queued and returns.
    #[tokio::test]
    async fn stopping_takes_what_is_queued_even_with_a_live_source() {
        let (sink, feed) = intent_channel(8);
        let (stop, stopped) = oneshot::channel();
        sink.send(intent("a"));
        sink.send(intent("b"));
        stop.send(()).unwrap();
        let (log, _) = tokio::time::timeout(
            Duration::from_secs(5),
            collect(feed, IntentLog::default(), stopped),
        )
        .await
        .expect("collect returns once stopped");
        assert_eq!(log.intents().count(), 2);
        drop(sink);
    }

    #[test]
    fn a_full_queue_counts_what_it_drops_and_keeps_the_rest() {
        let (sink, mut feed) = intent_channel(2);
        for name in ["a", "b", "c"] {
            sink.send(intent(name));
        }
        let names: Vec<String> = feed.drain().into_iter().map(|i| i.pod.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(feed.dropped(), 1);
        assert!(feed.drain().is_empty());
    }
}
