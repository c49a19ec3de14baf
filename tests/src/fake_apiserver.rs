//! A stand-in Kubernetes API server for the tests of the Kubernetes source:
//! no API server runs on these machines, so API responses in the API
//! server's wire format (recorded ones, `tests/fixtures/kubernetes/`, or a
//! directory a test writes in the same layout) are served on 127.0.0.1 by
//! `tests/scripts/fake_apiserver.py`, which logs every request so tests can
//! assert what the source asked for. The layout is in the script's
//! docstring.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tempfile::TempDir;

use crate::{
    process::{die_with_parent, stop_child},
    workspace_root,
};

const PYTHON: &str = "/usr/bin/python3";
/// The server stops by itself after this long, should a test leak it.
const LIFETIME_SECONDS: &str = "300";

pub struct FakeApiServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl FakeApiServer {
    /// Serves the recorded `tests/fixtures/kubernetes/`. With
    /// `shift_to_now`, event times are moved so the newest is two seconds
    /// ago (an agent ignores pulls from long before its run).
    pub fn start(shift_to_now: bool) -> FakeApiServer {
        FakeApiServer::start_with(
            &workspace_root().join("tests/fixtures/kubernetes"),
            shift_to_now,
        )
    }

    /// Serves `fixtures`, a directory in the layout the script documents
    /// (`events-list.json`, `events-watch.jsonl`, `pods/NS/NAME.json`, ...).
    /// The events are read once at start (objects on each GET): write them
    /// before calling this.
    pub fn start_with(fixtures: &Path, shift_to_now: bool) -> FakeApiServer {
        let dir = tempfile::tempdir().expect("a temp dir for the fake API server");
        let mut command = Command::new(PYTHON);
        command
            .arg(workspace_root().join("tests/scripts/fake_apiserver.py"))
            .arg("--fixtures")
            .arg(fixtures)
            .arg("--log")
            .arg(dir.path().join("requests.jsonl"))
            .args(["--lifetime", LIFETIME_SECONDS])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if shift_to_now {
            command.arg("--shift-to-now");
        }
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} fake_apiserver.py: {e}"));
        // The first line says where it listens; a crash closes stdout.
        let mut first = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("reading the fake API server's first line");
        let port = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = stop_child(&mut child, libc::SIGKILL, Duration::ZERO);
                panic!("the fake API server did not start: {first:?}")
            });
        FakeApiServer {
            child: Some(child),
            port,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for this server, with a bearer token the log shows.
    pub fn kubeconfig(&self) -> PathBuf {
        write_kubeconfig(self.dir.path(), &self.url())
    }

    /// Every request so far: `{method, path, query, authorization}`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON request line"))
            .collect()
    }
}

/// A kubeconfig at `dir/kubeconfig` pointing at `url`.
pub fn write_kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\n\
         current-context: fake\nusers:\n- name: agent\n  user:\n    token: test-token\n"
    );
    std::fs::write(&path, text).expect("writing a kubeconfig");
    path
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = stop_child(&mut child, libc::SIGTERM, Duration::from_secs(2))
        {
            eprintln!("observer-tests: stopping the fake API server: {e:#}");
        }
    }
}
