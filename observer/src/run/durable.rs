//! `--state-dir`: the record a run continues. Opened before anything is
//! attached, so a dir another agent holds, one from another node or from a
//! newer version is refused with exit 2; damage (a torn last record after a
//! crash, a corrupt segment) is reported and skipped, never repaired in
//! place and never fatal.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use observer_report::Report;
use observer_state::{
    record::{self, DurableState},
    spool::{Damage, Limits, SpoolWriter},
};

use tokio::sync::Notify;

use crate::{
    UsageError, control::http::ReportUnavailable, pipeline::input::PipelineHandle, run::endpoints,
};

/// Rewritten while the agent runs and at exit.
pub const REPORT_FILE: &str = "report.json";
pub const JUNIT_FILE: &str = "junit.xml";

/// What an earlier run left, and the writer to go on with.
pub struct Continued {
    pub writer: SpoolWriter,
    pub state: DurableState,
    pub damage: Vec<Damage>,
    /// Records whose checksum held but which this build cannot read.
    pub unreadable: u64,
}

/// The node's identity for the record: the host's machine id (the file
/// systemd writes at first boot), else its hostname.
pub fn node_id(host_root: &Path) -> String {
    std::fs::read_to_string(host_root.join("etc/machine-id"))
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        .or_else(crate::setup::preflight::hostname)
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn open(dir: &Path, host_root: &Path) -> Result<Continued, UsageError> {
    let (writer, recovered) =
        SpoolWriter::open(&dir.join("spool"), &node_id(host_root), Limits::default())
            .map_err(UsageError::new)?;
    let (records, unreadable) = record::decode_all(&recovered.records);
    let state = DurableState::replay(&records);
    for damage in &recovered.damage {
        eprintln!(
            "registry-observer: warning: the state dir's spool has a {} record at {} byte {} ({} bytes skipped){}",
            damage.kind,
            damage.file.display(),
            damage.offset,
            damage.bytes,
            if damage.kind == "torn" {
                ": the last run stopped while writing it"
            } else {
                ""
            }
        );
    }
    if unreadable > 0 {
        eprintln!(
            "registry-observer: warning: {unreadable} record(s) in the state dir's spool could not be read and were skipped"
        );
    }
    Ok(Continued {
        writer,
        state,
        damage: recovered.damage,
        unreadable,
    })
}

/// Rewrites DIR/report.json (and DIR/junit.xml) as of now every `every`
/// and at each phase marker, until the agent stops.
pub async fn write_snapshots(
    dir: PathBuf,
    junit: bool,
    every: Duration,
    phase_changed: Arc<Notify>,
    live: Arc<OnceLock<endpoints::Live>>,
    pipeline: PipelineHandle,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = phase_changed.notified() => {}
        }
        match endpoints::report_now(&live, &pipeline).await {
            Ok(report) => {
                if let Err(e) = write_files(&dir, junit, &report)
                    && !std::mem::replace(&mut warned, true)
                {
                    eprintln!(
                        "registry-observer: warning: cannot write the state dir's report ({e}); the run goes on"
                    );
                }
            }
            Err(ReportUnavailable::NotAttached) => {}
            Err(ReportUnavailable::ShuttingDown) => return,
        }
    }
}

/// The final report in the state dir too, beside `--report`.
pub fn write_report_files(dir: &Path, junit: bool, report: &Report) {
    if let Err(e) = write_files(dir, junit, report) {
        eprintln!("registry-observer: warning: cannot write the state dir's report: {e}");
    }
}

fn write_files(dir: &Path, junit: bool, report: &Report) -> anyhow::Result<()> {
    observer_report::write(&dir.join(REPORT_FILE), report)?;
    if junit {
        let xml = observer_report::junit::to_junit(report)?;
        observer_report::write_atomically(&dir.join(JUNIT_FILE), xml.as_bytes())?;
    }
    Ok(())
}
