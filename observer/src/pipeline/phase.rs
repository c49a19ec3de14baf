//! Phases of a run (`boot`, `upgrade`, ...): names, markers, and which
//! phase an event belongs to. Pure: the control socket and the HTTP
//! endpoint send [`PhaseChange`]s into the pipeline, which owns the
//! [`PhaseTimeline`].

use std::{fmt, time::SystemTime};

use observer_report::phase::{PhaseMarker, PhaseSource};
use serde::Deserialize;

/// A validated phase name: `[a-z0-9][a-z0-9_-]{0,62}`, so it is safe as a
/// metric label, a JUnit suite name and a file-name fragment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct PhaseName(String);

/// A name that [`PhaseName::parse`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid phase name {given:?}: use 1 to 63 characters a-z, 0-9, '_' or '-', starting with a letter or digit (e.g. boot, upgrade, post-upgrade)"
)]
pub struct PhaseNameError {
    pub given: String,
}

/// For config files (`phases.initial`): the same check as `--phase`.
impl TryFrom<String> for PhaseName {
    type Error = PhaseNameError;
    fn try_from(text: String) -> Result<PhaseName, PhaseNameError> {
        PhaseName::parse(&text)
    }
}

impl PhaseName {
    pub fn parse(text: &str) -> Result<PhaseName, PhaseNameError> {
        let valid_first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let valid_rest = |c: char| valid_first(c) || c == '_' || c == '-';
        let mut chars = text.chars();
        let ok = chars.next().is_some_and(valid_first) && chars.all(valid_rest) && text.len() <= 63;
        if ok {
            Ok(PhaseName(text.to_string()))
        } else {
            Err(PhaseNameError {
                given: text.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request to switch phase, as it travels to the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseChange {
    pub name: PhaseName,
    pub source: PhaseSource,
    /// CLOCK_BOOTTIME of the request: events stamped earlier still belong to
    /// the previous phase even when they are read after the request.
    pub boot_ns: u64,
    pub at: SystemTime,
}

/// The phases of a run in order, each with the kernel time it began.
#[derive(Clone, Debug)]
pub struct PhaseTimeline {
    /// (start boot_ns, marker), in order of arrival.
    phases: Vec<(u64, PhaseMarker)>,
}

impl PhaseTimeline {
    /// The first phase; every event before any marker belongs to it.
    pub fn starting(name: &PhaseName, at: SystemTime) -> PhaseTimeline {
        PhaseTimeline {
            phases: vec![(
                0,
                PhaseMarker {
                    name: name.to_string(),
                    started_at: at,
                    source: PhaseSource::Start,
                },
            )],
        }
    }

    /// A record continued after a restart: its markers, every one before
    /// this run's events, so they belong to the last one until the next.
    pub fn continuing(markers: Vec<PhaseMarker>) -> PhaseTimeline {
        assert!(!markers.is_empty(), "a timeline has a first phase");
        PhaseTimeline {
            phases: markers.into_iter().map(|marker| (0, marker)).collect(),
        }
    }

    pub fn switch(&mut self, change: &PhaseChange) -> &PhaseMarker {
        // Requests arrive in order through one queue; a clock that went
        // backwards must not reorder phases.
        let last_start = self.phases.last().map_or(0, |(start, _)| *start);
        self.phases.push((
            change.boot_ns.max(last_start),
            PhaseMarker {
                name: change.name.to_string(),
                started_at: change.at,
                source: change.source,
            },
        ));
        &self.phases.last().expect("just pushed").1
    }

    /// The phase an event stamped `boot_ns` belongs to: the last one that
    /// had started by then. The reader drains the ring every few
    /// milliseconds, so an event can be read after a later marker arrived.
    pub fn phase_at(&self, boot_ns: u64) -> &str {
        self.phases
            .iter()
            .rev()
            .find(|(start, _)| *start <= boot_ns)
            .map_or(&self.phases[0].1.name, |(_, marker)| &marker.name)
    }

    pub fn markers(&self) -> Vec<PhaseMarker> {
        self.phases.iter().map(|(_, m)| m.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_are_label_safe() {
        for good in [
            "boot",
            "upgrade",
            "post-upgrade",
            "0",
            "a_b",
            &"x".repeat(63),
        ] {
            assert_eq!(PhaseName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "Boot", "-x", "_x", "a b", "a/b", "é", &"x".repeat(64)] {
            let error = PhaseName::parse(bad).unwrap_err();
            assert_eq!(error.given, bad);
            assert!(error.to_string().contains("a-z, 0-9"), "{error}");
        }
        assert_eq!(
            PhaseName::parse("Boot").unwrap_err().to_string(),
            "invalid phase name \"Boot\": use 1 to 63 characters a-z, 0-9, '_' or '-', starting with a letter or digit (e.g. boot, upgrade, post-upgrade)"
        );
    }

    #[test]
    fn events_belong_to_the_phase_in_force_when_they_happened() {
        let t = SystemTime::UNIX_EPOCH;
        let mut timeline = PhaseTimeline::starting(&PhaseName::parse("boot").unwrap(), t);
        assert_eq!(timeline.phase_at(5), "boot");
        let change = |name: &str, boot_ns| PhaseChange {
            name: PhaseName::parse(name).unwrap(),
            source: PhaseSource::Mark,
            boot_ns,
            at: t,
        };
        timeline.switch(&change("upgrade", 100));
        timeline.switch(&change("after", 200));
        // A late request with an older stamp does not reorder phases.
        timeline.switch(&change("late", 150));
        assert_eq!(timeline.phase_at(99), "boot");
        assert_eq!(timeline.phase_at(100), "upgrade");
        assert_eq!(timeline.phase_at(199), "upgrade");
        assert_eq!(timeline.phase_at(200), "late");
        let markers = timeline.markers();
        assert_eq!(
            markers.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["boot", "upgrade", "after", "late"]
        );
        assert_eq!(markers[0].source, PhaseSource::Start);
        let json = serde_json::to_value(&markers[1]).unwrap();
        assert_eq!(json["source"], "mark");
        assert_eq!(json["started_at"], "1970-01-01T00:00:00.000Z");
    }
}
