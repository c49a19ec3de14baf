//! `--events PATH`: the forensic trail, one JSON line per recorded event
//! (the attempt as it stands after the event) and per phase change,
//! written by a dedicated thread so the pipeline never waits for a disk.
//! Lines the writer cannot take are counted, never silently lost.
//! The file rotates by size: `PATH.1` is the newest rotated file.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::SystemTime,
};

use observer_report::{attempt::Attempt, phase::PhaseMarker, time::rfc3339};
use serde::Serialize;

/// Rotated files kept next to the live one (`PATH.1` .. `PATH.5`).
pub const ROTATED_FILES_KEPT: u32 = 5;
/// Lines waiting for the writer; beyond this they are dropped and counted.
const BACKLOG_LINES: usize = 16_384;

/// One line of the file.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Attempt {
        #[serde(serialize_with = "rfc3339")]
        time: SystemTime,
        #[serde(flatten)]
        attempt: Box<Attempt>,
    },
    Phase {
        #[serde(serialize_with = "rfc3339")]
        time: SystemTime,
        #[serde(flatten)]
        marker: PhaseMarker,
    },
}

/// Why `--events PATH` cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum EventsLogError {
    #[error(
        "cannot write the events file {} ({error}); choose a writable location with --events PATH",
        path.display()
    )]
    Open { path: PathBuf, error: io::Error },
    #[error("cannot start the events file writer: {0}")]
    Writer(io::Error),
}

/// The pipeline's handle: cheap, never blocks.
pub struct EventsLog {
    lines: Option<SyncSender<Line>>,
    dropped: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

impl EventsLog {
    /// Opens (appending to) `path` now, so a bad path is an error before
    /// anything is attached, and starts the writer thread.
    pub fn open(path: &Path, max_bytes: u64) -> Result<EventsLog, EventsLogError> {
        let file = RotatingFile::open(path, max_bytes, ROTATED_FILES_KEPT).map_err(|error| {
            EventsLogError::Open {
                path: path.to_path_buf(),
                error,
            }
        })?;
        let (lines, receiver) = mpsc::sync_channel(BACKLOG_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = Arc::clone(&dropped);
        let writer = std::thread::Builder::new()
            .name("events-log".into())
            .spawn(move || write_lines(file, receiver, &writer_dropped))
            .map_err(EventsLogError::Writer)?;
        Ok(EventsLog {
            lines: Some(lines),
            dropped,
            writer: Some(writer),
        })
    }

    /// A log that writes nothing (no `--events`).
    pub fn disabled() -> EventsLog {
        EventsLog {
            lines: None,
            dropped: Arc::new(AtomicU64::new(0)),
            writer: None,
        }
    }

    /// False without `--events`: callers skip building lines.
    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    pub fn send(&self, line: Line) {
        let Some(lines) = &self.lines else { return };
        match lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far, readable while the log runs.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Writes what is queued, stops the writer and returns the lines
    /// dropped in all.
    pub fn finish(mut self) -> u64 {
        drop(self.lines.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            eprintln!("registry-observer: the events file writer crashed");
        }
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines(mut file: RotatingFile, lines: mpsc::Receiver<Line>, dropped: &AtomicU64) {
    let mut warned = false;
    for line in lines {
        let result = serde_json::to_vec(&line)
            .map_err(io::Error::other)
            .and_then(|mut json| {
                json.push(b'\n');
                file.write_line(&json)
            });
        if let Err(e) = result {
            dropped.fetch_add(1, Ordering::Relaxed);
            if !warned {
                eprintln!(
                    "registry-observer: warning: writing the events file {} failed ({e}); lines are being dropped and counted",
                    file.path.display()
                );
                warned = true;
            }
        }
    }
}

/// An append-only file that rotates when the next line would make it
/// larger than `max_bytes`: PATH -> PATH.1 -> ... -> PATH.keep (dropped).
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Appends to an existing file: a restarted agent must not erase the
    /// trail of the previous run.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            written,
        })
    }

    /// Writes one whole line and flushes it to the kernel, so a crash
    /// loses at most the line being written.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.file.flush()?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            match fs::remove_file(numbered(self.keep)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for n in (1..self.keep).rev() {
                match fs::rename(numbered(n), numbered(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use observer_report::phase::PhaseSource;

    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(&path, 20, 2).unwrap();
        for n in 0..7 {
            // 10 bytes each: two lines per file.
            file.write_line(format!("line {n:03}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(read(&path), "line 006\n");
        let rotated = |n: u32| read(&dir.path().join(format!("events.jsonl.{n}")));
        assert_eq!(rotated(1), "line 004\nline 005\n");
        assert_eq!(rotated(2), "line 002\nline 003\n");
        // The oldest lines went with the file beyond `keep`.
        assert!(!dir.path().join("events.jsonl.3").exists());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        let mut file = RotatingFile::open(&path, 4, 1).unwrap();
        file.write_line(b"0123456789\n").unwrap();
        file.write_line(b"abcdefghij\n").unwrap();
        assert_eq!(read(&path), "abcdefghij\n");
        assert_eq!(read(&dir.path().join("e.1")), "0123456789\n");
    }

    #[test]
    fn appends_to_an_existing_trail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        fs::write(&path, "old\n").unwrap();
        let mut file = RotatingFile::open(&path, 1 << 20, 1).unwrap();
        file.write_line(b"new\n").unwrap();
        assert_eq!(read(&path), "old\nnew\n");
    }

    #[test]
    fn writes_typed_json_lines_from_its_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventsLog::open(&path, 1 << 20).unwrap();
        log.send(Line::Phase {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            marker: PhaseMarker {
                name: "upgrade".into(),
                started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
                source: PhaseSource::Http,
            },
        });
        assert_eq!(log.finish(), 0);
        let line: serde_json::Value = serde_json::from_str(read(&path).trim()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"type": "phase", "time": "1970-01-01T00:00:01.000Z",
                "name": "upgrade", "started_at": "1970-01-01T00:00:01.000Z", "source": "http"})
        );
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let error = EventsLog::open(Path::new("/nonexistent-dir/e.jsonl"), 10)
            .err()
            .unwrap();
        assert!(matches!(error, EventsLogError::Open { .. }), "{error:?}");
        let error = error.to_string();
        assert!(
            error.starts_with("cannot write the events file /nonexistent-dir/e.jsonl ("),
            "{error}"
        );
        assert!(error.contains("--events PATH"), "{error}");
    }
}
