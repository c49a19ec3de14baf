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

use observer_report::phase::PhaseSource;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use crate::pipeline::{input::PipelineHandle, phase::PhaseName};

pub const DEFAULT_SOCKET: &str = "/run/registry-observer/control.sock";
/// A request is one short line; anything longer is not ours.
const MAX_REQUEST_BYTES: u64 = 256;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control socket could not be set up. Each message carries its
/// cause (so there is no `source()`: printed once, as one line).
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error(
        "cannot create {} for the control socket ({error}); choose another place with --control-socket PATH",
        dir.display()
    )]
    CreateDir { dir: PathBuf, error: io::Error },
    #[error(
        "another registry-observer is running with control socket {}; stop it, or give this one --control-socket PATH",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("cannot replace the stale control socket {} ({error})", path.display())]
    ReplaceStale { path: PathBuf, error: io::Error },
    #[error(
        "cannot create the control socket {} ({error}); choose another place with --control-socket PATH",
        path.display()
    )]
    Bind { path: PathBuf, error: io::Error },
    #[error("cannot restrict {} to root ({error})", path.display())]
    Restrict { path: PathBuf, error: io::Error },
}

/// A request line that is not `mark NAME`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown request {line:?}; send `mark NAME`")]
pub struct UnknownRequest {
    /// The line without its trailing whitespace.
    pub line: String,
}

/// Why `registry-observer mark` got no `ok` from the agent.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error(
        "no agent answers on {} ({error}): is `registry-observer run` running? (give the same --control-socket PATH to both)",
        socket.display()
    )]
    NoAgent { socket: PathBuf, error: io::Error },
    #[error("sending to {}: {error}", socket.display())]
    Send { socket: PathBuf, error: io::Error },
    #[error("no reply from {}: {error}", socket.display())]
    NoReply { socket: PathBuf, error: io::Error },
    /// The agent answered `error: REASON`.
    #[error("{reason}")]
    Refused { reason: String },
    /// A reply line outside the protocol, shown as it came.
    #[error("{reply}")]
    Unexpected { reply: String },
    #[error("the agent closed the connection without a reply")]
    Closed,
}

/// The bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (creating its directory). A stale socket file left by a
    /// killed agent is replaced; a live agent's is not.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlSocketError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|error| ControlSocketError::CreateDir {
                dir: dir.to_path_buf(),
                error,
            })?;
        }
        if path.exists() {
            if StdUnixStream::connect(path).is_ok() {
                return Err(ControlSocketError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(|error| ControlSocketError::ReplaceStale {
                path: path.to_path_buf(),
                error,
            })?;
        }
        let listener = UnixListener::bind(path).map_err(|error| ControlSocketError::Bind {
            path: path.to_path_buf(),
            error,
        })?;
        // Root only. Under the usual umask nobody else could connect (that
        // needs write permission) even before this.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |error| ControlSocketError::Restrict {
                path: path.to_path_buf(),
                error,
            },
        )?;
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
    let text = match parse_request(&line) {
        Ok(name) => match switch.switch_phase(name, PhaseSource::Mark).await {
            Ok(text) => format!("ok {text}\n"),
            Err(e) => format!("error: {e}\n"),
        },
        Err(e) => format!("error: {e}\n"),
    };
    write.write_all(text.as_bytes()).await
}

/// `mark NAME` -> NAME.
fn parse_request(line: &str) -> Result<&str, UnknownRequest> {
    match line.trim_end_matches(['\n', '\r']).split_once(' ') {
        Some(("mark", name)) => Ok(name),
        _ => Err(UnknownRequest {
            line: line.trim_end().to_string(),
        }),
    }
}

/// `registry-observer mark NAME`: asks the agent at `socket` to switch
/// phase; returns its reply or a sentence saying why it could not.
pub fn mark(socket: &Path, name: &PhaseName) -> Result<String, MarkError> {
    let mut stream = StdUnixStream::connect(socket).map_err(|error| MarkError::NoAgent {
        socket: socket.to_path_buf(),
        error,
    })?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
        .and_then(|()| stream.write_all(format!("mark {name}\n").as_bytes()))
        .map_err(|error| MarkError::Send {
            socket: socket.to_path_buf(),
            error,
        })?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(|error| MarkError::NoReply {
            socket: socket.to_path_buf(),
            error,
        })?;
    let reply = reply.trim_end();
    if let Some(text) = reply.strip_prefix("ok ") {
        return Ok(text.to_string());
    }
    Err(match reply.strip_prefix("error: ") {
        Some(reason) => MarkError::Refused {
            reason: reason.to_string(),
        },
        None if reply.is_empty() => MarkError::Closed,
        None => MarkError::Unexpected {
            reply: reply.to_string(),
        },
    })
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
        assert_eq!(
            parse_request("phase upgrade\n").unwrap_err().to_string(),
            "unknown request \"phase upgrade\"; send `mark NAME`"
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
        let in_use = ControlSocket::bind(&path).unwrap_err();
        assert!(
            matches!(in_use, ControlSocketError::InUse { .. }),
            "{in_use:?}"
        );
        assert_eq!(
            in_use.to_string(),
            format!(
                "another registry-observer is running with control socket {}; stop it, or give this one --control-socket PATH",
                path.display()
            )
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

        // The pipeline has stopped: the agent's refusal reaches `mark`.
        drop(queue);
        let client_path = path.clone();
        let refused = tokio::task::spawn_blocking(move || {
            mark(&client_path, &PhaseName::parse("late").unwrap())
        })
        .await
        .unwrap()
        .unwrap_err();
        assert!(
            matches!(&refused, MarkError::Refused { reason } if reason == "the agent is shutting down"),
            "{refused:?}"
        );
        assert_eq!(refused.to_string(), "the agent is shutting down");

        stop_tx.send(true).unwrap();
        server.await.unwrap();
        assert!(!path.exists(), "the socket file is removed on exit");
        let error = mark(&path, &PhaseName::parse("x").unwrap()).unwrap_err();
        assert!(matches!(error, MarkError::NoAgent { .. }), "{error:?}");
        let error = error.to_string();
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
