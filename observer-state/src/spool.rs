//! The spool directory: segments `spool-SEQUENCE.seg` written in order, a
//! lock so that two agents never write the same record, and recovery after
//! a crash.
//!
//! What a record holds is the caller's business. One kind of record is
//! special to the spool: a checkpoint (the whole state) starts a new base
//! segment, after which older segments are removed, so the spool stays
//! bounded by one checkpoint plus what came after it. Reading starts at the
//! newest base segment whose checkpoint is intact.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::segment::{self, End, FORMAT_VERSION, HeaderError, RecordTooLarge, SegmentHeader};

const LOCK_FILE: &str = "spool.lock";
const PREFIX: &str = "spool-";
const SUFFIX: &str = ".seg";

/// Sizes that bound the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Past this total the oldest segments are removed (and the loss
    /// reported): a checkpoint should come long before.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            segment_bytes: 8 << 20,
            max_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("cannot use the state dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another registry-observer uses the state dir {dir} (it holds {dir}/{LOCK_FILE}); stop it, or give this one another --state-dir"
    )]
    InUse { dir: PathBuf },
    #[error(
        "the state dir {dir} holds the record of another node ({found}; this one is {ours}): it was copied here by mistake; move it aside"
    )]
    ForeignNode {
        dir: PathBuf,
        found: String,
        ours: String,
    },
    #[error("{file}: {source}")]
    Header {
        file: PathBuf,
        #[source]
        source: HeaderError,
    },
}

#[derive(Debug, Error)]
pub enum AppendError {
    #[error(transparent)]
    TooLarge(#[from] RecordTooLarge),
    /// The disk is full or failing: the record is not in the spool.
    #[error("writing the spool: {0}")]
    Io(#[from] io::Error),
}

/// Damage found when the spool was read; the good records before it are
/// kept, the rest of that segment is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub file: PathBuf,
    pub offset: usize,
    pub bytes: usize,
    /// `torn` (a record cut short: a crash while writing) or `corrupt` (a
    /// checksum that does not match, or a segment that is not one).
    pub kind: &'static str,
}

/// What a previous writer left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// From the newest intact checkpoint on, in order (the checkpoint
    /// first, when there is one).
    pub records: Vec<Vec<u8>>,
    /// Whether `records` starts with a checkpoint.
    pub from_checkpoint: bool,
    pub damage: Vec<Damage>,
}

/// Segments removed to keep the spool under its size: their records are
/// lost, and must be reported so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub segments: u64,
    pub bytes: u64,
}

pub struct SpoolWriter {
    dir: PathBuf,
    node: String,
    limits: Limits,
    /// Held for the writer's life: the lock is the open file.
    _lock: File,
    current: File,
    current_sequence: u64,
    current_bytes: u64,
    /// Earlier segments still on disk, oldest first: (sequence, bytes).
    older: Vec<(u64, u64)>,
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:016}{SUFFIX}"))
}

fn sequences(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(sequence) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX))
            .and_then(|n| n.parse().ok())
        {
            found.push(sequence);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Reads the spool in `dir` without writing it (for `report build` while
/// an agent runs, or after). Checks the node and the format version.
pub fn read(dir: &Path, node: Option<&str>) -> Result<Recovered, OpenError> {
    let io_error = |source| OpenError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut segments = Vec::new();
    for sequence in sequences(dir).map_err(io_error)? {
        let file = segment_path(dir, sequence);
        let bytes = fs::read(&file).map_err(io_error)?;
        segments.push((file, bytes));
    }
    let mut recovered = Recovered::default();
    let mut decoded = Vec::new();
    for (file, bytes) in &segments {
        match segment::decode(bytes) {
            Ok(read) => decoded.push((file, read)),
            // A file cut inside its own header: created just before a crash.
            Err(HeaderError::Damaged(_) | HeaderError::NotASegment) => {
                recovered.damage.push(Damage {
                    file: file.clone(),
                    offset: 0,
                    bytes: bytes.len(),
                    kind: if bytes.len() < segment::MAGIC.len() {
                        "torn"
                    } else {
                        "corrupt"
                    },
                })
            }
            Err(source) => {
                return Err(OpenError::Header {
                    file: file.clone(),
                    source,
                });
            }
        }
    }
    if let (Some(ours), Some((_, read))) = (node, decoded.first())
        && read.header.node != ours
    {
        return Err(OpenError::ForeignNode {
            dir: dir.to_path_buf(),
            found: read.header.node.clone(),
            ours: ours.to_string(),
        });
    }
    // The newest base segment whose checkpoint survived.
    let start = decoded
        .iter()
        .rposition(|(_, read)| read.header.base && !read.records.is_empty())
        .unwrap_or(0);
    recovered.from_checkpoint = decoded
        .get(start)
        .is_some_and(|(_, read)| read.header.base && !read.records.is_empty());
    for (file, read) in &decoded[start.min(decoded.len())..] {
        recovered
            .records
            .extend(read.records.iter().map(|r| r.to_vec()));
        let (kind, offset, bytes) = match read.end {
            End::Clean => continue,
            End::Torn { offset, bytes } => ("torn", offset, bytes),
            End::Corrupt { offset, bytes } => ("corrupt", offset, bytes),
        };
        recovered.damage.push(Damage {
            file: (*file).clone(),
            offset,
            bytes,
            kind,
        });
    }
    Ok(recovered)
}

/// Whether a writer (a running agent) holds the spool in `dir` now.
pub fn in_use(dir: &Path) -> bool {
    let Ok(lock) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(lock.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
}

impl SpoolWriter {
    /// Locks `dir` (creating it), reads what an earlier writer left, and
    /// starts a new segment after the last one. Damage is reported, never
    /// repaired in place: a damaged segment stays as it is until a
    /// checkpoint makes it unnecessary.
    pub fn open(
        dir: &Path,
        node: &str,
        limits: Limits,
    ) -> Result<(SpoolWriter, Recovered), OpenError> {
        let io_error = |source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse {
                    dir: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let recovered = read(dir, Some(node))?;
        let mut older = Vec::new();
        for sequence in sequences(dir).map_err(io_error)? {
            let bytes = fs::metadata(segment_path(dir, sequence))
                .map_err(io_error)?
                .len();
            older.push((sequence, bytes));
        }
        let next = older.last().map_or(0, |(sequence, _)| sequence + 1);
        let (current, current_bytes) = create_segment(dir, node, next, false).map_err(io_error)?;
        let writer = SpoolWriter {
            dir: dir.to_path_buf(),
            node: node.to_string(),
            limits,
            _lock: lock,
            current,
            current_sequence: next,
            current_bytes,
            older,
        };
        Ok((writer, recovered))
    }

    /// Appends one record (buffered by the kernel until [`Self::sync`]).
    /// Returns the segments removed to stay under the size limit.
    pub fn append(&mut self, payload: &[u8]) -> Result<Removed, AppendError> {
        let framed = segment::encode_record(payload)?;
        if self.current_bytes + framed.len() as u64 > self.limits.segment_bytes {
            self.start_segment(false)?;
        }
        self.current.write_all(&framed)?;
        self.current_bytes += framed.len() as u64;
        Ok(self.enforce_limit()?)
    }

    /// Writes `state` as the first record of a new base segment, makes it
    /// durable, then removes every older segment: they are not needed to
    /// read the state any more.
    pub fn checkpoint(&mut self, state: &[u8]) -> Result<(), AppendError> {
        let framed = segment::encode_record(state)?;
        self.start_segment(true)?;
        self.current.write_all(&framed)?;
        self.current_bytes += framed.len() as u64;
        self.sync()?;
        for (sequence, _) in std::mem::take(&mut self.older) {
            remove_segment(&self.dir, sequence)?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.current.sync_data()
    }

    /// Bytes on disk, all segments.
    pub fn bytes(&self) -> u64 {
        self.current_bytes + self.older.iter().map(|(_, b)| b).sum::<u64>()
    }

    fn start_segment(&mut self, base: bool) -> io::Result<()> {
        self.sync()?;
        let next = self.current_sequence + 1;
        let (file, bytes) = create_segment(&self.dir, &self.node, next, base)?;
        self.older.push((self.current_sequence, self.current_bytes));
        self.current = file;
        self.current_sequence = next;
        self.current_bytes = bytes;
        Ok(())
    }

    fn enforce_limit(&mut self) -> io::Result<Removed> {
        let mut removed = Removed::default();
        while self.bytes() > self.limits.max_bytes && !self.older.is_empty() {
            let (sequence, bytes) = self.older.remove(0);
            remove_segment(&self.dir, sequence)?;
            removed.segments += 1;
            removed.bytes += bytes;
        }
        Ok(removed)
    }
}

fn create_segment(dir: &Path, node: &str, sequence: u64, base: bool) -> io::Result<(File, u64)> {
    let header = segment::encode_header(&SegmentHeader {
        version: FORMAT_VERSION,
        node: node.to_string(),
        sequence,
        base,
    });
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, sequence))?;
    file.write_all(&header)?;
    file.sync_data()?;
    // The new name must survive a crash too.
    File::open(dir)?.sync_all()?;
    Ok((file, header.len() as u64))
}

fn remove_segment(dir: &Path, sequence: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, sequence)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "3f2a9c0d1e4b5a6978877665544332211";

    fn small() -> Limits {
        Limits {
            segment_bytes: 200,
            max_bytes: 10_000,
        }
    }

    fn records(recovered: &Recovered) -> Vec<String> {
        recovered
            .records
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect()
    }

    #[test]
    fn a_second_writer_continues_after_the_first_and_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut writer, recovered) = SpoolWriter::open(dir.path(), NODE, small()).unwrap();
            assert_eq!(recovered, Recovered::default());
            for i in 0..20 {
                writer.append(format!("event {i}").as_bytes()).unwrap();
            }
            writer.sync().unwrap();
        }
        let (_writer, recovered) = SpoolWriter::open(dir.path(), NODE, small()).unwrap();
        let expected: Vec<String> = (0..20).map(|i| format!("event {i}")).collect();
        assert_eq!(records(&recovered), expected);
        assert!(recovered.damage.is_empty());
        assert!(!recovered.from_checkpoint);
        // Segments rotated at 200 bytes.
        assert!(sequences(dir.path()).unwrap().len() > 2);
    }

    #[test]
    fn a_checkpoint_makes_older_segments_go_and_reading_start_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) = SpoolWriter::open(dir.path(), NODE, small()).unwrap();
        for i in 0..30 {
            writer.append(format!("old {i}").as_bytes()).unwrap();
        }
        writer.checkpoint(b"state after 30").unwrap();
        writer.append(b"new 0").unwrap();
        writer.sync().unwrap();
        assert_eq!(sequences(dir.path()).unwrap().len(), 1);
        drop(writer);
        let recovered = read(dir.path(), Some(NODE)).unwrap();
        assert!(recovered.from_checkpoint);
        assert_eq!(records(&recovered), ["state after 30", "new 0"]);
    }

    #[test]
    fn a_torn_tail_is_reported_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) = SpoolWriter::open(dir.path(), NODE, Limits::default()).unwrap();
        writer.append(b"kept").unwrap();
        writer.append(b"cut short by a crash").unwrap();
        writer.sync().unwrap();
        drop(writer);
        let last = segment_path(dir.path(), *sequences(dir.path()).unwrap().last().unwrap());
        let len = fs::metadata(&last).unwrap().len();
        let file = OpenOptions::new().write(true).open(&last).unwrap();
        file.set_len(len - 3).unwrap();
        let (mut writer, recovered) =
            SpoolWriter::open(dir.path(), NODE, Limits::default()).unwrap();
        assert_eq!(records(&recovered), ["kept"]);
        assert_eq!(recovered.damage.len(), 1);
        assert_eq!(recovered.damage[0].kind, "torn");
        assert_eq!(recovered.damage[0].file, last);
        // The next writer goes on in a new segment; the old damage stays
        // reported until a checkpoint replaces it, and later records read.
        writer.append(b"after restart").unwrap();
        writer.sync().unwrap();
        let again = read(dir.path(), Some(NODE)).unwrap();
        assert_eq!(records(&again), ["kept", "after restart"]);
        assert_eq!(again.damage.len(), 1);
    }

    #[test]
    fn a_corrupt_segment_is_skipped_from_the_damage_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) = SpoolWriter::open(dir.path(), NODE, small()).unwrap();
        for i in 0..20 {
            writer.append(format!("event {i:02}").as_bytes()).unwrap();
        }
        writer.sync().unwrap();
        drop(writer);
        let first = segment_path(dir.path(), sequences(dir.path()).unwrap()[0]);
        let mut bytes = fs::read(&first).unwrap();
        let at = bytes.len() - 2;
        bytes[at] ^= 0xff;
        fs::write(&first, &bytes).unwrap();
        let recovered = read(dir.path(), Some(NODE)).unwrap();
        assert_eq!(recovered.damage.len(), 1);
        assert_eq!(recovered.damage[0].kind, "corrupt");
        let got = records(&recovered);
        // The damaged record is missing; every other one is there, in order.
        assert_eq!(got.len(), 19, "{got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }

    #[test]
    fn two_writers_on_one_dir_and_a_dir_from_another_node_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, _) = SpoolWriter::open(dir.path(), NODE, small()).unwrap();
        writer.append(b"x").unwrap();
        writer.sync().unwrap();
        let second = SpoolWriter::open(dir.path(), NODE, small());
        assert!(matches!(second, Err(OpenError::InUse { .. })));
        drop(writer);
        let foreign = SpoolWriter::open(dir.path(), "another-node", small());
        let error = match foreign {
            Err(e) => e,
            Ok(_) => panic!("a foreign node's dir was accepted"),
        };
        assert!(matches!(error, OpenError::ForeignNode { .. }));
        assert!(
            error.to_string().contains("copied here by mistake"),
            "{error}"
        );
    }

    #[test]
    fn a_newer_format_is_refused_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = segment::encode_header(&SegmentHeader {
            version: FORMAT_VERSION,
            node: NODE.into(),
            sequence: 0,
            base: false,
        });
        header[segment::MAGIC.len()..segment::MAGIC.len() + 4]
            .copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        fs::write(segment_path(dir.path(), 0), header).unwrap();
        let error = read(dir.path(), Some(NODE)).unwrap_err();
        assert!(
            error.to_string().contains("newer registry-observer"),
            "{error}"
        );
    }

    #[test]
    fn past_the_size_limit_the_oldest_segments_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 200,
            max_bytes: 600,
        };
        let (mut writer, _) = SpoolWriter::open(dir.path(), NODE, limits).unwrap();
        let mut removed = Removed::default();
        for i in 0..100 {
            let r = writer.append(format!("event {i:03}").as_bytes()).unwrap();
            removed.segments += r.segments;
            removed.bytes += r.bytes;
        }
        assert!(writer.bytes() <= 600, "{}", writer.bytes());
        assert!(removed.segments > 0);
        drop(writer);
        let recovered = read(dir.path(), Some(NODE)).unwrap();
        let got = records(&recovered);
        assert_eq!(got.last().unwrap(), "event 099");
        assert!(got.len() < 100);
    }
}
