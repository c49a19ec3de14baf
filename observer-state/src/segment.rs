//! One spool segment's bytes: a header, then records, each framed by its
//! length and a CRC-32 of its payload. Pure: bytes in, bytes out.
//!
//! ```text
//! header:  "ROSPOOL\n" | version u32 LE | text length u32 LE | text (`key=value` lines)
//! record:  payload length u32 LE | crc32(payload) u32 LE | payload
//! ```
//!
//! A writer appends records and fsyncs; a crash (power loss, `kill -9`)
//! can leave the last record cut short. Reading stops at the first record
//! that is cut short (a torn tail, expected after a crash) or whose
//! checksum does not match (damage): everything before it is good,
//! nothing after it is trusted, and the reader says which and where.

use thiserror::Error;

/// The first bytes of every segment.
pub const MAGIC: [u8; 8] = *b"ROSPOOL\n";
/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Larger records are refused when written and treated as damage when read,
/// so a corrupt length cannot make the reader allocate gigabytes.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
/// The header's text is short (a few fields); more is damage.
const MAX_HEADER_TEXT: usize = 4096;
const FRAME_BYTES: usize = 8;

/// Who wrote a segment and where it sits in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u32,
    /// The node the record belongs to (its machine id): a state dir copied
    /// to another node must not be continued there.
    pub node: String,
    /// Position in the spool: segments are read in this order.
    pub sequence: u64,
    /// The segment's first record holds the whole state (a checkpoint):
    /// reading starts at the newest such segment, older ones are not needed.
    pub base: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not a registry-observer spool segment (no ROSPOOL header)")]
    NotASegment,
    #[error(
        "written by a newer registry-observer (spool format {found}; this build reads up to {FORMAT_VERSION}); upgrade, or move the state dir aside"
    )]
    NewerVersion { found: u32 },
    #[error("the segment header is cut short or damaged: {0}")]
    Damaged(&'static str),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("a record of {len} bytes is larger than the spool allows ({MAX_RECORD_BYTES})")]
pub struct RecordTooLarge {
    pub len: usize,
}

/// How the readable part of a segment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte belonged to a whole, good record.
    Clean,
    /// The last record is cut short at `offset` (`bytes` of it present):
    /// what a crash mid-write leaves.
    Torn { offset: usize, bytes: usize },
    /// The record at `offset` is damaged (checksum, or an impossible
    /// length); the `bytes` from there on are not trusted.
    Corrupt { offset: usize, bytes: usize },
}

/// What could be read of a segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub header: SegmentHeader,
    /// Offset of the first record: a writer reopening the segment
    /// truncates to the end of the last good record.
    pub records_start: usize,
    pub records: Vec<&'a [u8]>,
    /// Where the good records end.
    pub good_until: usize,
    pub end: End,
}

pub fn encode_header(header: &SegmentHeader) -> Vec<u8> {
    let text = format!(
        "node={}\nsequence={}\nbase={}\n",
        header.node, header.sequence, header.base as u8
    );
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + text.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&header.version.to_le_bytes());
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Frames `payload` as one record.
pub fn encode_record(payload: &[u8]) -> Result<Vec<u8>, RecordTooLarge> {
    if payload.len() > MAX_RECORD_BYTES {
        return Err(RecordTooLarge { len: payload.len() });
    }
    let mut bytes = Vec::with_capacity(FRAME_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
}

pub fn decode_header(bytes: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(HeaderError::NotASegment);
    }
    let version = u32_at(bytes, MAGIC.len()).ok_or(HeaderError::Damaged("no version"))?;
    if version > FORMAT_VERSION {
        return Err(HeaderError::NewerVersion { found: version });
    }
    if version == 0 {
        return Err(HeaderError::Damaged("version 0"));
    }
    let text_len =
        u32_at(bytes, MAGIC.len() + 4).ok_or(HeaderError::Damaged("no header length"))? as usize;
    if text_len > MAX_HEADER_TEXT {
        return Err(HeaderError::Damaged("header length too large"));
    }
    let start = MAGIC.len() + 8;
    let text = bytes
        .get(start..start + text_len)
        .ok_or(HeaderError::Damaged("header text cut short"))?;
    let text = std::str::from_utf8(text).map_err(|_| HeaderError::Damaged("header not UTF-8"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    };
    let node = field("node").ok_or(HeaderError::Damaged("no node"))?;
    let sequence = field("sequence")
        .and_then(|s| s.parse().ok())
        .ok_or(HeaderError::Damaged("no sequence"))?;
    let base = match field("base") {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(HeaderError::Damaged("no base flag")),
    };
    Ok((
        SegmentHeader {
            version,
            node: node.to_string(),
            sequence,
            base,
        },
        start + text_len,
    ))
}

/// Reads a whole segment: its header, then records up to the first one
/// that is cut short or damaged.
pub fn decode(bytes: &[u8]) -> Result<Segment<'_>, HeaderError> {
    let (header, records_start) = decode_header(bytes)?;
    let mut records = Vec::new();
    let mut at = records_start;
    let end = loop {
        let rest = bytes.len() - at;
        if rest == 0 {
            break End::Clean;
        }
        let (Some(len), Some(crc)) = (u32_at(bytes, at), u32_at(bytes, at + 4)) else {
            break End::Torn {
                offset: at,
                bytes: rest,
            };
        };
        let len = len as usize;
        if len > MAX_RECORD_BYTES {
            break End::Corrupt {
                offset: at,
                bytes: rest,
            };
        }
        let Some(payload) = bytes.get(at + FRAME_BYTES..at + FRAME_BYTES + len) else {
            break End::Torn {
                offset: at,
                bytes: rest,
            };
        };
        if crc32fast::hash(payload) != crc {
            break End::Corrupt {
                offset: at,
                bytes: rest,
            };
        }
        records.push(payload);
        at += FRAME_BYTES + len;
    };
    Ok(Segment {
        header,
        records_start,
        records,
        good_until: at,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            node: "0123456789abcdef".into(),
            sequence: 7,
            base: true,
        }
    }

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = encode_header(&header());
        for payload in payloads {
            bytes.extend(encode_record(payload).unwrap());
        }
        bytes
    }

    #[test]
    fn records_round_trip_in_order() {
        let bytes = segment(&[b"one", b"", b"three"]);
        let read = decode(&bytes).unwrap();
        assert_eq!(read.header, header());
        assert_eq!(read.records, [&b"one"[..], b"", b"three"]);
        assert_eq!(read.end, End::Clean);
        assert_eq!(read.good_until, bytes.len());
    }

    #[test]
    fn a_record_cut_anywhere_is_a_torn_tail_and_the_ones_before_it_stand() {
        let whole = segment(&[b"first", b"second record"]);
        let first_end = encode_header(&header()).len() + FRAME_BYTES + 5;
        // Every cut inside the second record, its frame included.
        for cut in first_end + 1..whole.len() {
            let read = decode(&whole[..cut]).unwrap();
            assert_eq!(read.records, [&b"first"[..]], "cut at {cut}");
            assert_eq!(
                read.end,
                End::Torn {
                    offset: first_end,
                    bytes: cut - first_end
                },
                "cut at {cut}"
            );
            assert_eq!(read.good_until, first_end);
        }
    }

    #[test]
    fn a_flipped_bit_is_damage_and_nothing_after_it_is_trusted() {
        let mut bytes = segment(&[b"first", b"second", b"third"]);
        let second = encode_header(&header()).len() + FRAME_BYTES + 5;
        bytes[second + FRAME_BYTES + 2] ^= 0x10;
        let read = decode(&bytes).unwrap();
        assert_eq!(read.records, [&b"first"[..]]);
        assert_eq!(
            read.end,
            End::Corrupt {
                offset: second,
                bytes: bytes.len() - second
            }
        );
    }

    #[test]
    fn an_impossible_length_is_damage_not_an_allocation() {
        let mut bytes = segment(&[b"first"]);
        let at = bytes.len();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let read = decode(&bytes).unwrap();
        assert_eq!(read.records.len(), 1);
        assert!(matches!(read.end, End::Corrupt { offset, .. } if offset == at));
        assert_eq!(
            encode_record(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(RecordTooLarge {
                len: MAX_RECORD_BYTES + 1
            })
        );
    }

    #[test]
    fn headers_from_elsewhere_are_named() {
        assert_eq!(
            decode(b"{\"json\": 1}").unwrap_err(),
            HeaderError::NotASegment
        );
        assert_eq!(decode(b"").unwrap_err(), HeaderError::NotASegment);
        let mut newer = encode_header(&header());
        newer[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let error = decode(&newer).unwrap_err();
        assert_eq!(
            error,
            HeaderError::NewerVersion {
                found: FORMAT_VERSION + 1
            }
        );
        assert!(error.to_string().contains("upgrade"), "{error}");
        let whole = encode_header(&header());
        for cut in MAGIC.len()..whole.len() {
            assert!(
                matches!(decode(&whole[..cut]), Err(HeaderError::Damaged(_))),
                "cut at {cut}"
            );
        }
    }
}
