//! Stage 2 of a run: the kernel programs loaded and attached to the cgroup2
//! root (each hook on its own: one this kernel refuses is named, and the
//! run goes on with the rest), and the command's cgroup created.

use std::{path::Path, time::SystemTime};

use anyhow::Context;
use observer_report::HookMissing;

use crate::{
    UsageError,
    bpf::load::{self, LinkAction, Maps, MissingHook, Probes, pins::PinDir},
    pipeline::scope::CommandCgroup,
    run::{RunOptions, report::RunFacts},
};

pub struct Attached {
    /// Drop to detach.
    pub probes: Probes,
    pub maps: Maps,
    /// `run -- COMMAND`: the cgroup the command runs in.
    pub command_cgroup: Option<CommandCgroup>,
    /// Service mode: the pin dir, held (locked) until the agent exits.
    pub pins: Option<PinDir>,
}

pub async fn attach(
    cgroup_root: &Path,
    options: &RunOptions,
    pins: Option<PinDir>,
) -> anyhow::Result<Attached> {
    let root = cgroup_root.to_path_buf();
    let ring_buffer_bytes = options.ring_buffer_bytes;
    let refuse = options.refuse_programs.clone();
    let (loaded, pins) = tokio::task::spawn_blocking(move || {
        let loaded = load::load_and_attach(&load::LoadRequest {
            cgroup_root: &root,
            ring_buffer_bytes,
            refuse: &refuse,
            pins: pins.as_ref(),
        });
        (loaded, pins)
    })
    .await
    .context("the loader task failed")?;
    let (probes, maps) = loaded.map_err(|e| UsageError::new(format!("{e:#}")))?;
    if let Some(pinning) = &probes.pinning {
        say_pinning(pinning);
    }
    let command_cgroup = if options.command.is_empty() {
        None
    } else {
        Some(CommandCgroup::create(cgroup_root).with_context(|| {
            format!(
                "creating a cgroup for the command under {}",
                cgroup_root.display()
            )
        })?)
    };
    warn_missing_hooks(&probes.missing, options.verbose);
    if let Some(why) = &probes.dns_sender_why {
        eprintln!(
            "registry-observer: note: {why}; a DNS query's sender is the socket's owner as the connect/sendmsg hooks saw it (queries on sockets connected before the agent started count as dns_sender_unknown)"
        );
    }
    Ok(Attached {
        probes,
        maps,
        command_cgroup,
        pins,
    })
}

/// One line on what service mode adopted and swapped, and a warning for
/// anything replaced rather than updated.
fn say_pinning(pinning: &load::Pinning) {
    if let Some(why) = &pinning.incompatible {
        eprintln!(
            "registry-observer: warning: {why}: the pins in {} were removed and recreated; what their ring buffer held is lost (a gap in the record)",
            pinning.dir.display()
        );
    }
    let count = |wanted: fn(&LinkAction) -> bool| {
        pinning
            .links
            .iter()
            .filter(|(_, action)| wanted(action))
            .count()
    };
    eprintln!(
        "registry-observer: service mode: {} in {} ({} link(s) updated to this agent's programs, {} attached, {} tracing link(s) attached anew, {} replaced); they stay attached when the agent exits (`registry-observer detach` removes them)",
        if pinning.adopted {
            "adopted the pinned programs"
        } else {
            "pinned the programs"
        },
        pinning.dir.display(),
        count(|a| *a == LinkAction::Updated),
        count(|a| *a == LinkAction::Attached),
        count(|a| *a == LinkAction::Reattached),
        count(|a| matches!(a, LinkAction::Replaced(_))),
    );
    for (hook, action) in &pinning.links {
        if let LinkAction::Replaced(why) = action {
            eprintln!("registry-observer: warning: the pinned link of {hook} was replaced: {why}");
        }
    }
}

impl Attached {
    /// The run's fixed facts for its reports.
    pub fn facts(
        &self,
        started_at: SystemTime,
        options: &RunOptions,
        cgroup_root: &Path,
    ) -> RunFacts {
        RunFacts {
            started_at,
            command: self
                .command_cgroup
                .is_some()
                .then(|| options.command.clone()),
            command_cgroup: self
                .command_cgroup
                .as_ref()
                .map(|c| c.relative_path().to_string()),
            cgroup2_mount: cgroup_root.display().to_string(),
            hooks: self.probes.attached.iter().map(|h| h.to_string()).collect(),
            dns_sender: self.probes.dns_sender.as_str().to_string(),
            hooks_missing: self
                .probes
                .missing
                .iter()
                .map(|missing| HookMissing {
                    hook: missing.hook.to_string(),
                    reason: missing.reason.clone(),
                    evidence: Some(missing.evidence.to_string()),
                })
                .collect(),
            record: None,
        }
    }
}

/// One warning per program this kernel refused: why, and what evidence the
/// run lacks as a result; with `verbose`, the verifier's whole log.
fn warn_missing_hooks(missing: &[MissingHook], verbose: bool) {
    for hook in missing {
        eprintln!(
            "registry-observer: warning: hook {} is not attached: {}; missing as a result: {}",
            hook.hook, hook.reason, hook.evidence
        );
        match (&hook.verifier_log, verbose) {
            (Some(log), true) => eprintln!(
                "--- verifier log of {} ---\n{}\n--- end of verifier log ---",
                hook.hook,
                log.trim_end()
            ),
            (Some(_), false) => {
                eprintln!("registry-observer: (run with --verbose for the verifier's whole log)")
            }
            (None, _) => {}
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "registry-observer: warning: the observation is incomplete (observer.hooks_missing in the report)"
        );
    }
}

/// The /readyz answer once the programs are attached.
pub fn readiness(missing: &[MissingHook]) -> String {
    if missing.is_empty() {
        "ready: every hook is attached\n".to_string()
    } else {
        let hooks: Vec<&str> = missing.iter().map(|missing| missing.hook).collect();
        format!(
            "ready, but incomplete: hook(s) not attached: {}\n",
            hooks.join(", ")
        )
    }
}
