//! The control socket: `registry-observer mark NAME` tells a running agent
//! that a new phase begins. A unix stream socket, root only (mode 0600);
//! one request line per connection, one reply line.
//!
//! Protocol: `mark NAME\n` -> `ok phase NAME started at TIME\n` or
//! `error: REASON\n`.

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use crate::pipeline::input::PipelineHandle;
use crate::pipeline::phase::PhaseName;
use crate::pipeline::phase::PhaseSource;

pub const DEFAULT_SOCKET: &str = "/run/registry-observer/control.sock";
/// A request is one short line; anything longer is not ours.
const MAX_REQUEST_BYTES: u64 = 256;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (creating its directory). A stale socket file left by a
    /// killed agent is replaced; a live agent's is not.
    pub fn bind(path: &Path) -> Result<ControlSocket, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create {} for the control socket ({e}); choose another place with --control-socket PATH",
                    dir.display()
                )
            })?;
        }
        if path.exists() {
            if StdUnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another registry-observer is running with control socket {}; stop it, or give this one --control-socket PATH",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                format!(
                    "cannot replace the stale control socket {} ({e})",
                    path.display()
                )
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            format!(
                "cannot create the control socket {} ({e}); choose another place with --control-socket PATH",
                path.display()
            )
        })?;
        // Root only. Under the usual umask nobody else could connect (that
        // needs write permission) even before this.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {} to root ({e})", path.display()))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until `stop` turns true.
    pub async fn serve(self, switch: PipelineHandle, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let switch = switch.clone();
                        tokio::spawn(async move {
                            let _ = answer(stream, &switch).await;
                        });
                    }
                }
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, switch: &PipelineHandle) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        CLIENT_TIMEOUT,
        tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES)).read_line(&mut line),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request"))??;
    let reply = match parse_request(&line) {
        Ok(name) => switch.switch_phase(name, PhaseSource::Mark).await,
        Err(e) => Err(e),
    };
    let text = match reply {
        Ok(text) => format!("ok {text}\n"),
        Err(e) => format!("error: {e}\n"),
    };
    write.write_all(text.as_bytes()).await
}

/// `mark NAME` -> NAME.
fn parse_request(line: &str) -> Result<&str, String> {
    match line.trim_end_matches(['\n', '\r']).split_once(' ') {
        Some(("mark", name)) => Ok(name),
        _ => Err(format!(
            "unknown request {:?}; send `mark NAME`",
            line.trim_end()
        )),
    }
}

/// `registry-observer mark NAME`: asks the agent at `socket` to switch
/// phase; returns its reply or a sentence saying why it could not.
pub fn mark(socket: &Path, name: &PhaseName) -> Result<String, String> {
    let mut stream = StdUnixStream::connect(socket).map_err(|e| {
        format!(
            "no agent answers on {} ({e}): is `registry-observer run` running? (give the same --control-socket PATH to both)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
        .and_then(|()| stream.write_all(format!("mark {name}\n").as_bytes()))
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|e| format!("no reply from {}: {e}", socket.display()))?;
    let reply = reply.trim_end();
    match reply.strip_prefix("ok ") {
        Some(text) => Ok(text.to_string()),
        None => Err(reply
            .strip_prefix("error: ")
            .unwrap_or(if reply.is_empty() {
                "the agent closed the connection without a reply"
            } else {
                reply
            })
            .to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::pipeline::input::Input;

    #[test]
    fn requests_are_mark_and_a_name() {
        assert_eq!(parse_request("mark upgrade\n"), Ok("upgrade"));
        assert_eq!(parse_request("mark upgrade\r\n"), Ok("upgrade"));
        assert!(
            parse_request("phase upgrade\n")
                .unwrap_err()
                .contains("mark NAME")
        );
        assert!(parse_request("").is_err());
    }

    /// Real sockets in a temp dir: request, queued change, reply, file mode,
    /// stale-socket replacement and the error when nobody listens.
    #[tokio::test]
    async fn mark_switches_the_phase_through_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let socket = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            ControlSocket::bind(&path)
                .unwrap_err()
                .contains("another registry-observer")
        );

        let (queue, mut inputs) = mpsc::channel(4);
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(socket.serve(PipelineHandle::new(queue.downgrade()), stop));
        let client_path = path.clone();
        let reply = tokio::task::spawn_blocking(move || {
            mark(&client_path, &PhaseName::parse("upgrade").unwrap())
        })
        .await
        .unwrap()
        .unwrap();
        assert!(reply.starts_with("phase upgrade started at "), "{reply}");
        let Some(Input::Phase(change)) = inputs.recv().await else {
            panic!("no phase change queued")
        };
        assert_eq!(change.name.as_str(), "upgrade");
        assert_eq!(change.source, PhaseSource::Mark);

        // A bad name is refused by the agent too (old clients, scripts).
        let client_path = path.clone();
        let raw = tokio::task::spawn_blocking(move || {
            let mut stream = StdUnixStream::connect(&client_path).unwrap();
            stream.write_all(b"mark Not Valid\n").unwrap();
            let mut reply = String::new();
            BufReader::new(stream).read_line(&mut reply).unwrap();
            reply
        })
        .await
        .unwrap();
        assert!(raw.starts_with("error: invalid phase name"), "{raw}");

        stop_tx.send(true).unwrap();
        server.await.unwrap();
        assert!(!path.exists(), "the socket file is removed on exit");
        let error = mark(&path, &PhaseName::parse("x").unwrap()).unwrap_err();
        assert!(
            error.contains("is `registry-observer run` running?"),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");

        // A stale file (an agent that was killed) is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = ControlSocket::bind(&path).unwrap();
        assert_eq!(socket.path(), path);
    }
}
