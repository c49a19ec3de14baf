//! Reads what /proc says about a live process. Parsers are pure and tested on
//! real lines; the readers return `None` once the process is gone.

use std::{fs, path::Path};

/// `comm`, parent pid and start time from /proc/<pid>/stat. The comm field is
/// wrapped in parentheses and may itself contain spaces and ')', so the
/// fields after it are found from the last ')'.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    Some(StatFields {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFields {
    pub comm: String,
    pub ppid: u32,
    /// Clock ticks after boot: with the pid, a process identity that survives
    /// pid reuse.
    pub start_ticks: u64,
}

/// The cgroup2 path from /proc/<pid>/cgroup (the `0::` line).
pub fn parse_cgroup2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().to_string())
}

/// NUL-separated argv; an empty file means a kernel thread or a zombie.
pub fn parse_cmdline(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.is_empty() {
        return None;
    }
    let trimmed = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    Some(
        trimmed
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    pub stat: StatFields,
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
    pub cgroup: Option<String>,
}

pub fn read_stat(proc_root: &Path, pid: u32) -> Option<StatFields> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

pub fn read_exe(proc_root: &Path, pid: u32) -> Option<String> {
    fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

pub fn read_process(proc_root: &Path, pid: u32) -> Option<ProcessFacts> {
    let dir = proc_root.join(pid.to_string());
    let stat = read_stat(proc_root, pid)?;
    Some(ProcessFacts {
        stat,
        exe: read_exe(proc_root, pid),
        cmdline: fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|b| parse_cmdline(&b)),
        cgroup: fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|t| parse_cgroup2(&t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_comm() {
        let line = "4242 (my (weird) name) S 17 4242 4242 0 -1 4194560 120 0 0 0 1 0 0 0 20 0 1 0 98765 2367488 256 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                comm: "my (weird) name".into(),
                ppid: 17,
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (init) S"), None);
    }

    #[test]
    fn cgroup_v2_line_in_hybrid_and_pure_layouts() {
        let hybrid =
            "12:pids:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/ro-test-1-1\n";
        assert_eq!(parse_cgroup2(hybrid), Some("/ro-test-1-1".into()));
        assert_eq!(
            parse_cgroup2("0::/system.slice/crio.service\n"),
            Some("/system.slice/crio.service".into())
        );
        assert_eq!(parse_cgroup2("3:cpu:/\n"), None);
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(
            parse_cmdline(b"skopeo\0inspect\0docker://quay.io/a/b:c\0"),
            Some(vec![
                "skopeo".into(),
                "inspect".into(),
                "docker://quay.io/a/b:c".into()
            ])
        );
        assert_eq!(parse_cmdline(b""), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let facts = read_process(Path::new("/proc"), me).expect("own /proc entry");
        assert_eq!(
            facts.exe,
            std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        );
        assert!(facts.cmdline.unwrap()[0].contains("registry_observer"));
        assert!(facts.stat.ppid > 0);
        assert_eq!(read_process(Path::new("/proc"), u32::MAX), None);
    }
}
