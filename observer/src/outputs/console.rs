//! Stage 7, export: one human line per registry event as it happens.
//! (The JSON report is written by `report` at the end of the run.)

use std::{io::Write, time::SystemTime};

use observer_report::phase::{PhaseMarker, PhaseSource};

use crate::pipeline::{attribute::Origin, classify::Match};

/// `12:34:56.789  quay.io  dns_query(AAAA)  pid 4242 skopeo /usr/bin/skopeo  cgroup /x`
pub fn format_line(at: SystemTime, matched: &Match, origin: &Origin) -> String {
    let time = humantime::format_rfc3339_millis(at).to_string();
    // Keep HH:MM:SS.mmm; the date is in the report.
    let clock = time.get(11..23).unwrap_or(&time);
    let evidence: Vec<&str> = matched.evidence.iter().map(|e| e.as_str()).collect();
    let mut what = evidence.join("+");
    if let Some(detail) = &matched.detail {
        what.push_str(&format!("({detail})"));
    }
    if let Some(dest) = matched.dest {
        what.push_str(&format!(" -> {dest}"));
    }
    let process = &origin.process;
    let mut who = format!("pid {} {}", process.pid, process.comm);
    if let Some(exe) = &process.exe {
        who.push_str(&format!(" {exe}"));
    }
    let place = if let Some(pod) = &origin.pod {
        match (&pod.namespace, &pod.name) {
            (Some(namespace), Some(name)) => format!("pod {namespace}/{name}"),
            _ => format!("pod {}", pod.uid),
        }
    } else if let Some(container) = &origin.owner.container {
        format!("container {} {}", container.runtime, &container.id[..12])
    } else if let Some(unit) = &origin.owner.unit {
        format!("unit {unit}")
    } else {
        match &origin.cgroup.path {
            Some(path) => format!("cgroup {path}"),
            None => format!("cgroup id {}", origin.cgroup.id),
        }
    };
    // A connect() matched by a catalog CIDR has no name: show the range.
    let registry = match &matched.host {
        Some(host) => host.clone(),
        None => matched.entry.pattern.to_string(),
    };
    format!("{clock}  {registry}  {what}  {who}  {place}")
}

/// `12:34:56.789  phase upgrade begins (mark)`
pub fn format_phase_line(marker: &PhaseMarker) -> String {
    let time = humantime::format_rfc3339_millis(marker.started_at).to_string();
    let clock = time.get(11..23).unwrap_or(&time);
    let source = match marker.source {
        PhaseSource::Start => "start",
        PhaseSource::Mark => "registry-observer mark",
        PhaseSource::Http => "POST /phase",
    };
    format!("{clock}  phase {} begins ({source})", marker.name)
}

pub struct Console {
    out: Box<dyn Write + Send>,
}

impl Console {
    pub fn new(out: Box<dyn Write + Send>) -> Console {
        Console { out }
    }

    /// Live lines are best effort: a closed terminal must not stop the
    /// observation or lose the report.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr, SocketAddr},
        time::Duration,
    };

    use observer_report::{
        attempt::Evidence,
        process::{CgroupRef, Pod, ProcessInfo},
    };

    use super::*;
    use crate::pipeline::{
        attribute::{CgroupOwner, cgroup_path},
        classify::Catalog,
    };

    #[test]
    fn line_names_time_host_evidence_process_and_place() {
        let matched = Match {
            host: Some("quay.io".into()),
            entry: Catalog::builtin().lookup("quay.io").unwrap().clone(),
            evidence: vec![Evidence::DnsAnswer, Evidence::Connect],
            dest: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
                443,
            )),
            detail: None,
            cookie: None,
        };
        let mut origin = Origin {
            process: ProcessInfo {
                pid: 42,
                comm: "skopeo".into(),
                uid: Some(0),
                exe: Some("/usr/bin/skopeo".into()),
                cmdline: None,
                ancestors: vec![],
            },
            cgroup: CgroupRef {
                id: 7,
                path: Some("/system.slice/mcd.service".into()),
            },
            owner: cgroup_path::parse("/system.slice/mcd.service"),
            pod: None,
            component: "mcd".into(),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        assert_eq!(
            format_line(at, &matched, &origin),
            "08:00:00.123  quay.io  dns_answer+connect -> 198.18.0.1:443  pid 42 skopeo /usr/bin/skopeo  unit mcd.service"
        );
        assert_eq!(
            format_phase_line(&PhaseMarker {
                name: "upgrade".into(),
                started_at: at,
                source: PhaseSource::Mark,
            }),
            "08:00:00.123  phase upgrade begins (registry-observer mark)"
        );
        origin.owner = CgroupOwner::default();
        origin.cgroup.path = None;
        assert!(format_line(at, &matched, &origin).ends_with("cgroup id 7"));
        let mut pod = Pod::uid_only("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        origin.pod = Some(pod.clone());
        assert!(
            format_line(at, &matched, &origin)
                .ends_with("pod 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        pod.namespace = Some("openshift-machine-config-operator".into());
        pod.name = Some("machine-config-daemon-x7k2p".into());
        origin.pod = Some(pod);
        assert!(
            format_line(at, &matched, &origin)
                .ends_with("pod openshift-machine-config-operator/machine-config-daemon-x7k2p")
        );
    }
}
