//! Payload stage: the first bytes of a TCP connection -> what it asked for.
//!
//! The kernel hands user space, per new connection and direction, the first
//! few payload segments (sequence number, wire length, captured bytes). A
//! [`StreamAssembler`] joins them into a bounded prefix of the stream and
//! decides, as early as the bytes allow, what the stream is: a TLS
//! ClientHello (its SNI), an HTTP request through a proxy (its `CONNECT`
//! authority or `Host`), the first DNS-over-TCP message, or something else.
//!
//! Pure: no I/O and no clock. Every failure is a typed [`UnparsedReason`]
//! counted per parser in [`PayloadStats`]; nothing here panics on input.
//! Parsing is done by maintained crates (tls-parser, httparse); this module
//! only joins segments, and `tls` only joins record fragments.

pub mod client_hello;
pub mod dns_tcp;
pub mod http_request;
pub mod stats;

#[cfg(test)]
pub mod testing;

/// How many bytes of a stream are kept. A ClientHello with a post-quantum key
/// share is 1.4 to 1.8 KiB and proxy request headers a few hundred bytes; the
/// kernel sends at most a few 2 KiB segments, so this bound is reached only by
/// streams that would never parse.
pub const PREFIX_LIMIT: usize = 16 * 1024;

/// One TCP segment's payload as the kernel captured it.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// TCP sequence number of the segment's first payload byte.
    pub seq: u32,
    /// Payload length on the wire.
    pub wire_len: u32,
    /// The bytes the kernel copied: the first `captured.len()` bytes of the
    /// payload, fewer than `wire_len` when the capture was cut short.
    pub captured: &'a [u8],
}

/// What the caller knows about the stream before any byte is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Recognize TLS or HTTP from the first bytes; anything else is
    /// [`StreamFinding::NotRecognized`].
    Auto,
    /// DNS over TCP (the caller saw port 53): length-prefixed messages, in
    /// either direction.
    DnsTcp,
}

/// The parsers whose failures are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Parser {
    Tls,
    Http,
    DnsTcp,
}

impl Parser {
    /// The parser's key in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Parser::Tls => "tls",
            Parser::Http => "http",
            Parser::DnsTcp => "dns_tcp",
        }
    }
}

/// Why a stream that looked like TLS, HTTP or DNS gave no finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnparsedReason {
    /// No more segments will come (budget spent, connection closed) and the
    /// message is not complete.
    Incomplete,
    /// A segment is missing (lost capture or reordering), so the stream
    /// cannot be joined past it.
    Gap,
    /// The kernel captured fewer bytes of a segment than were sent.
    CaptureTruncated,
    /// The message does not fit in [`PREFIX_LIMIT`], or declares a length
    /// that cannot.
    TooLong,
    /// A length field is zero or beyond what the protocol allows.
    BadLength,
    /// The bytes break the protocol's grammar.
    Malformed,
    /// A TLS handshake that does not start with a ClientHello.
    NotClientHello,
    /// The server name, authority or Host is not a valid host name or IP
    /// address (non-ASCII, over-long label, bad port, ...).
    InvalidHost,
    /// More HTTP header fields than [`http_request::MAX_HEADERS`].
    TooManyHeaders,
}

impl UnparsedReason {
    /// The reason's key in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            UnparsedReason::Incomplete => "incomplete",
            UnparsedReason::Gap => "gap",
            UnparsedReason::CaptureTruncated => "capture_truncated",
            UnparsedReason::TooLong => "too_long",
            UnparsedReason::BadLength => "bad_length",
            UnparsedReason::Malformed => "malformed",
            UnparsedReason::NotClientHello => "not_client_hello",
            UnparsedReason::InvalidHost => "invalid_host",
            UnparsedReason::TooManyHeaders => "too_many_headers",
        }
    }
}

/// What a stream's first bytes said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFinding {
    /// A ClientHello parsed; `sni` is lower-case, `None` when the client sent
    /// no server name (e.g. it connected to an IP address).
    Tls { sni: Option<String> },
    /// A proxy request `CONNECT host:port`; `host` is a lower-case name or an
    /// IP address without brackets.
    HttpConnect { host: String, port: u16 },
    /// A plain HTTP request: the host from an absolute-form target
    /// (`GET http://host/...`, to a proxy) or else the `Host` header, port
    /// stripped; `None` when neither names one (HTTP/1.0).
    HttpRequest { host: Option<String> },
    /// The first DNS message of the stream, length prefix removed.
    /// `complete` is false when the stream ended inside the message but its
    /// 12-byte header was captured: the DNS decoder still reads what fits,
    /// as it does for UDP captures cut at their limit.
    DnsMessage { message: Vec<u8>, complete: bool },
    /// The stream looked like TLS, HTTP or DNS but did not parse.
    Unparsed {
        parser: Parser,
        reason: UnparsedReason,
    },
    /// Some other protocol (SSH, an HTTP/2 preface, ...): not an error.
    NotRecognized,
}

/// The answer to one [`StreamAssembler::push`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Undecided: feed the next segment, or call `finish`.
    NeedMore,
    /// Decided. Later segments are ignored.
    Done(StreamFinding),
    /// A finding was already returned; this segment was ignored.
    AlreadyDone,
}

/// Where one parser stands over a stream prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseStep<T> {
    /// The prefix is consistent so far but ends before the message does.
    NeedMore,
    Done(T),
    Failed(UnparsedReason),
}

impl<T> ParseStep<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> ParseStep<U> {
        match self {
            ParseStep::NeedMore => ParseStep::NeedMore,
            ParseStep::Done(value) => ParseStep::Done(f(value)),
            ParseStep::Failed(reason) => ParseStep::Failed(reason),
        }
    }
}

/// Whether a prefix starts the way a protocol does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recognition {
    Yes,
    No,
    /// Too few bytes to tell.
    NeedMore,
}

/// What a stream has been recognized as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Tls,
    Http,
    DnsTcp,
}

/// Joins one direction of one connection from its segments and decides what
/// it is.
///
/// The first segment's sequence number is the stream's start. Later segments
/// are placed by sequence number (wrapping): bytes already held are kept
/// (first copy wins, as most IDSes do, and a retransmission carries the same
/// bytes anyway), new bytes are appended, and a segment that starts past the
/// end of what is held, or a capture shorter than its segment, ends the
/// stream there: nothing later can be joined to it.
#[derive(Debug)]
pub struct StreamAssembler {
    /// `None` until the first bytes are recognized (mode `Auto`).
    protocol: Option<Protocol>,
    base_seq: Option<u32>,
    /// The joined prefix. Stays unallocated when the first segment decides.
    buffer: Vec<u8>,
    done: bool,
}

impl StreamAssembler {
    pub fn new(mode: Mode) -> StreamAssembler {
        StreamAssembler {
            protocol: match mode {
                Mode::Auto => None,
                Mode::DnsTcp => Some(Protocol::DnsTcp),
            },
            base_seq: None,
            buffer: Vec::new(),
            done: false,
        }
    }

    /// A finding was returned (or the stream was finished).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Adds one segment and says whether the stream is decided.
    pub fn push(&mut self, segment: Segment<'_>) -> Progress {
        if self.done {
            return Progress::AlreadyDone;
        }
        let wire_len = segment.wire_len as usize;
        if wire_len == 0 {
            // A bare ACK or FIN carries no stream bytes.
            return Progress::NeedMore;
        }
        // A capture longer than the wire is a kernel-side bug; trust the wire.
        let captured = &segment.captured[..segment.captured.len().min(wire_len)];
        let base_seq = *self.base_seq.get_or_insert(segment.seq);
        // Offsets are signed so that a segment from before the base (a late
        // original of a segment we saw retransmitted first) is recognized.
        let start = i64::from(segment.seq.wrapping_sub(base_seq) as i32);
        let held = self.buffer.len() as i64;
        if start > held {
            return self.conclude(UnparsedReason::Gap);
        }
        let captured_end = start + captured.len() as i64;
        let wire_end = start + wire_len as i64;
        if captured_end <= held {
            if wire_end > held {
                // Bytes after what we hold were sent but not captured.
                return self.conclude(UnparsedReason::CaptureTruncated);
            }
            return Progress::NeedMore;
        }
        let new_bytes = &captured[(held - start) as usize..];
        let room = PREFIX_LIMIT - self.buffer.len();
        let appended = &new_bytes[..new_bytes.len().min(room)];
        let stop = if self.buffer.len() + appended.len() == PREFIX_LIMIT {
            Some(UnparsedReason::TooLong)
        } else if wire_end > captured_end {
            Some(UnparsedReason::CaptureTruncated)
        } else {
            None
        };

        // Fast path: the stream's first bytes are decided without copying.
        if self.buffer.is_empty() {
            if let Some(finding) = evaluate(&mut self.protocol, appended) {
                self.done = true;
                return Progress::Done(finding);
            }
            self.buffer.extend_from_slice(appended);
        } else {
            self.buffer.extend_from_slice(appended);
            if let Some(finding) = evaluate(&mut self.protocol, &self.buffer) {
                self.done = true;
                return Progress::Done(finding);
            }
        }
        match stop {
            Some(reason) => self.conclude(reason),
            None => Progress::NeedMore,
        }
    }

    /// No more segments will come (the budget is spent or the connection
    /// closed). Turns an undecided stream into a finding; `None` when a
    /// finding was already returned or the stream carried no bytes.
    pub fn finish(&mut self) -> Option<StreamFinding> {
        if self.done || self.base_seq.is_none() {
            self.done = true;
            return None;
        }
        match self.conclude(UnparsedReason::Incomplete) {
            Progress::Done(finding) => Some(finding),
            Progress::NeedMore | Progress::AlreadyDone => None,
        }
    }

    /// The stream cannot grow: what the bytes held say, with `reason` when
    /// they are not enough.
    fn conclude(&mut self, reason: UnparsedReason) -> Progress {
        self.done = true;
        let prefix = self.buffer.as_slice();
        let parser = match self.protocol {
            Some(Protocol::Tls) => Parser::Tls,
            Some(Protocol::Http) => Parser::Http,
            Some(Protocol::DnsTcp) => {
                if let Some(message) = dns_tcp::partial_message(prefix) {
                    return Progress::Done(StreamFinding::DnsMessage {
                        message: message.to_vec(),
                        complete: false,
                    });
                }
                Parser::DnsTcp
            }
            // Too few bytes to recognize anything: name the parser the first
            // byte points to, or none if nothing was captured at all.
            None => match prefix.first() {
                None => return Progress::Done(StreamFinding::NotRecognized),
                Some(&client_hello::RECORD_TYPE_HANDSHAKE) => Parser::Tls,
                Some(_) => Parser::Http,
            },
        };
        Progress::Done(StreamFinding::Unparsed { parser, reason })
    }
}

/// Recognizes the protocol once, then runs its parser over the prefix.
/// `None` while the prefix is too short to decide.
fn evaluate(recognized: &mut Option<Protocol>, prefix: &[u8]) -> Option<StreamFinding> {
    let protocol = match *recognized {
        Some(protocol) => protocol,
        None => match (
            client_hello::recognize(prefix),
            http_request::recognize(prefix),
        ) {
            (Recognition::Yes, _) => *recognized.insert(Protocol::Tls),
            (_, Recognition::Yes) => *recognized.insert(Protocol::Http),
            (Recognition::No, Recognition::No) => return Some(StreamFinding::NotRecognized),
            _ => return None,
        },
    };
    let (parser, outcome) = match protocol {
        Protocol::Tls => (
            Parser::Tls,
            client_hello::server_name(prefix).map(|sni| StreamFinding::Tls { sni }),
        ),
        Protocol::Http => (
            Parser::Http,
            http_request::parse_request(prefix).map(|target| match target {
                http_request::Target::Connect { host, port } => {
                    StreamFinding::HttpConnect { host, port }
                }
                http_request::Target::Request { host } => StreamFinding::HttpRequest { host },
            }),
        ),
        Protocol::DnsTcp => (
            Parser::DnsTcp,
            dns_tcp::first_message(prefix).map(|message| StreamFinding::DnsMessage {
                message: message.to_vec(),
                complete: true,
            }),
        ),
    };
    match outcome {
        ParseStep::NeedMore => None,
        ParseStep::Done(finding) => Some(finding),
        ParseStep::Failed(reason) => Some(StreamFinding::Unparsed { parser, reason }),
    }
}

/// Validates a host name from the wire and returns it lower-cased, without
/// a trailing dot. ASCII letters, digits, `-` and `_` (seen in internal
/// names), labels of 1 to 63 bytes, at most 253 bytes in all.
pub(crate) fn host_name(bytes: &[u8]) -> Result<String, UnparsedReason> {
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    let label_ok = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bytes.is_empty() || bytes.len() > 253 || !bytes.split(|&b| b == b'.').all(label_ok) {
        return Err(UnparsedReason::InvalidHost);
    }
    // Checked ASCII above, so this conversion cannot fail.
    let text = std::str::from_utf8(bytes).map_err(|_| UnparsedReason::InvalidHost)?;
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use hickory_proto::{op::Message, serialize::binary::BinDecodable};
    use observer_report::observer::PayloadStats;

    use super::*;
    use crate::pipeline::payload::testing::{
        Prng, assemble, dns_query, dns_response, length_prefixed, rustls_client_hello, split,
    };

    /// MSS of a 1500-byte Ethernet path with TCP timestamps.
    const MSS: usize = 1448;

    fn tls(sni: &str) -> StreamFinding {
        StreamFinding::Tls {
            sni: Some(sni.into()),
        }
    }

    fn unparsed(parser: Parser, reason: UnparsedReason) -> StreamFinding {
        StreamFinding::Unparsed { parser, reason }
    }

    fn segment(seq: u32, bytes: &[u8]) -> Segment<'_> {
        Segment {
            seq,
            wire_len: bytes.len() as u32,
            captured: bytes,
        }
    }

    #[test]
    fn post_quantum_client_hello_is_decided_by_its_second_segment() {
        let hello = rustls_client_hello("quay.io");
        let segments = split(&hello, MSS, 1_000);
        assert_eq!(segments.len(), 2, "{} bytes", hello.len());
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assert_eq!(
            assembler.push(segment(segments[0].0, segments[0].1)),
            Progress::NeedMore
        );
        assert_eq!(
            assembler.push(segment(segments[1].0, segments[1].1)),
            Progress::Done(tls("quay.io"))
        );
        assert_eq!(
            assembler.push(segment(segments[1].0, segments[1].1)),
            Progress::AlreadyDone
        );
        assert_eq!(assembler.finish(), None);
    }

    #[test]
    fn every_segment_size_yields_the_same_sni() {
        let hello = rustls_client_hello("registry.ci.openshift.org");
        for size in 1..=hello.len() {
            assert_eq!(
                assemble(Mode::Auto, &split(&hello, size, 7)),
                tls("registry.ci.openshift.org"),
                "segments of {size}"
            );
        }
    }

    #[test]
    fn sequence_numbers_wrap() {
        let hello = rustls_client_hello("quay.io");
        for base in [u32::MAX, u32::MAX - 100, u32::MAX - MSS as u32] {
            assert_eq!(
                assemble(Mode::Auto, &split(&hello, MSS, base)),
                tls("quay.io")
            );
        }
    }

    #[test]
    fn retransmissions_and_overlaps_are_absorbed() {
        let hello = rustls_client_hello("quay.io");
        let base = 5_000u32;
        let at = |offset: usize| base.wrapping_add(offset as u32);
        let patterns: [&[(usize, usize)]; 5] = [
            // Each segment twice.
            &[
                (0, 1000),
                (0, 1000),
                (1000, hello.len()),
                (1000, hello.len()),
            ],
            // A retransmission coalescing what was sent and more.
            &[(0, 500), (0, 1200), (600, hello.len())],
            // Overlapping segments.
            &[(0, 800), (400, 1300), (1200, hello.len())],
            // A late original of a segment already seen.
            &[(0, 1000), (500, 1000), (1000, hello.len())],
            // A stale segment from before the stream's start.
            &[(100, 900), (0, 50), (900, hello.len())],
        ];
        for (index, pattern) in patterns.iter().enumerate() {
            let segments: Vec<_> = pattern
                .iter()
                .map(|&(start, end)| (at(start), &hello[start..end]))
                .collect();
            let expected = if index == 4 {
                // The stream starts at the first segment seen: its bytes are
                // not a record header, and that is all that can be said.
                StreamFinding::NotRecognized
            } else {
                tls("quay.io")
            };
            assert_eq!(assemble(Mode::Auto, &segments), expected, "pattern {index}");
        }
    }

    #[test]
    fn a_segment_reaching_back_before_the_start_adds_only_its_new_bytes() {
        let query = dns_query("quay.io.");
        let stream = length_prefixed(&query);
        let base = 1_000u32;
        let mut assembler = StreamAssembler::new(Mode::DnsTcp);
        assert_eq!(
            assembler.push(segment(base, &stream[..6])),
            Progress::NeedMore
        );
        // Ten bytes of an earlier exchange, then the stream again and more.
        let mut reaching_back = vec![0xee; 10];
        reaching_back.extend(&stream[..20]);
        assert_eq!(
            assembler.push(segment(base - 10, &reaching_back)),
            Progress::NeedMore
        );
        assert_eq!(assembler.buffer, stream[..20]);
        assert_eq!(
            assembler.push(segment(base + 20, &stream[20..])),
            Progress::Done(StreamFinding::DnsMessage {
                message: query,
                complete: true
            })
        );
    }

    #[test]
    fn a_gap_ends_the_stream_at_the_gap() {
        let hello = rustls_client_hello("quay.io");
        let segments = split(&hello, 600, 0);
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assert_eq!(
            assembler.push(segment(segments[0].0, segments[0].1)),
            Progress::NeedMore
        );
        assert_eq!(
            assembler.push(segment(segments[2].0, segments[2].1)),
            Progress::Done(unparsed(Parser::Tls, UnparsedReason::Gap))
        );
        // The missing segment arriving late changes nothing.
        assert_eq!(
            assembler.push(segment(segments[1].0, segments[1].1)),
            Progress::AlreadyDone
        );
    }

    #[test]
    fn a_short_capture_ends_the_stream_unless_it_already_decides() {
        let hello = rustls_client_hello("quay.io");
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assembler.push(segment(0, &hello[..1000]));
        let cut = Segment {
            seq: 1000,
            wire_len: (hello.len() - 1000) as u32,
            captured: &hello[1000..1100],
        };
        assert_eq!(
            assembler.push(cut),
            Progress::Done(unparsed(Parser::Tls, UnparsedReason::CaptureTruncated))
        );

        // A first segment captured short but holding the whole request line.
        let request = b"CONNECT quay.io:443 HTTP/1.1\r\nHost: quay.io:443\r\n\r\n";
        let mut assembler = StreamAssembler::new(Mode::Auto);
        let short = Segment {
            seq: 9,
            wire_len: request.len() as u32,
            captured: &request[..32],
        };
        assert_eq!(
            assembler.push(short),
            Progress::Done(StreamFinding::HttpConnect {
                host: "quay.io".into(),
                port: 443
            })
        );

        // A retransmission whose capture stops before our end but whose
        // wire bytes go past it.
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assembler.push(segment(0, &hello[..1000]));
        let resent = Segment {
            seq: 0,
            wire_len: 1500,
            captured: &hello[..900],
        };
        assert_eq!(
            assembler.push(resent),
            Progress::Done(unparsed(Parser::Tls, UnparsedReason::CaptureTruncated))
        );
    }

    #[test]
    fn finish_names_what_was_cut_short() {
        let hello = rustls_client_hello("quay.io");
        for cut in 1..hello.len() {
            assert_eq!(
                assemble(Mode::Auto, &[(0, &hello[..cut])]),
                unparsed(Parser::Tls, UnparsedReason::Incomplete),
                "cut {cut}"
            );
        }
        let request = b"GET /v2/ HTTP/1.1\r\nHost: quay.io\r\n\r\n";
        for cut in 1..request.len() {
            assert_eq!(
                assemble(Mode::Auto, &[(0, &request[..cut])]),
                unparsed(Parser::Http, UnparsedReason::Incomplete),
                "cut {cut}"
            );
        }
        let mut never_fed = StreamAssembler::new(Mode::Auto);
        assert_eq!(never_fed.finish(), None);
        let mut nothing_captured = StreamAssembler::new(Mode::Auto);
        let empty = Segment {
            seq: 1,
            wire_len: 1448,
            captured: &[],
        };
        assert_eq!(
            nothing_captured.push(empty),
            Progress::Done(StreamFinding::NotRecognized)
        );
    }

    #[test]
    fn a_stream_decided_by_its_first_segment_allocates_nothing() {
        let request = b"CONNECT quay.io:443 HTTP/1.1\r\n\r\n";
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assert!(matches!(
            assembler.push(segment(0, request)),
            Progress::Done(StreamFinding::HttpConnect { .. })
        ));
        assert_eq!(assembler.buffer.capacity(), 0);
        let mut assembler = StreamAssembler::new(Mode::Auto);
        assembler.push(segment(0, b"SSH-2.0-OpenSSH_9.6\r\n"));
        assert_eq!(assembler.buffer.capacity(), 0);
    }

    #[test]
    fn plain_http_and_proxy_requests() {
        let get = b"GET /v2/ HTTP/1.1\r\nHost: quay.io\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            assemble(Mode::Auto, &split(get, 5, 0)),
            StreamFinding::HttpRequest {
                host: Some("quay.io".into())
            }
        );
        let connect = b"CONNECT registry.redhat.io:443 HTTP/1.1\r\n\r\n";
        assert_eq!(
            assemble(Mode::Auto, &split(connect, 1, 0)),
            StreamFinding::HttpConnect {
                host: "registry.redhat.io".into(),
                port: 443
            }
        );
    }

    #[test]
    fn other_protocols_are_not_recognized() {
        for first_bytes in [
            b"SSH-2.0-OpenSSH_9.6\r\n".as_slice(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x17\x03\x03\x00\x10",
        ] {
            assert_eq!(
                assemble(Mode::Auto, &split(first_bytes, 3, 0)),
                StreamFinding::NotRecognized,
                "{first_bytes:?}"
            );
        }
    }

    #[test]
    fn oversized_streams_stop_at_the_prefix_limit() {
        let mut request = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        request.extend(vec![b'a'; 3 * PREFIX_LIMIT]);
        let mut assembler = StreamAssembler::new(Mode::Auto);
        let mut pushes = 0;
        let finding = loop {
            let (seq, bytes) = split(&request, 2048, 0)[pushes];
            pushes += 1;
            if let Progress::Done(finding) = assembler.push(segment(seq, bytes)) {
                break finding;
            }
        };
        assert_eq!(finding, unparsed(Parser::Http, UnparsedReason::TooLong));
        assert_eq!(pushes, PREFIX_LIMIT / 2048);
        assert_eq!(assembler.buffer.len(), PREFIX_LIMIT);
    }

    #[test]
    fn dns_over_tcp_first_message_is_reassembled() {
        let query = dns_query("quay.io.");
        let stream = length_prefixed(&query);
        let StreamFinding::DnsMessage { message, complete } =
            assemble(Mode::DnsTcp, &split(&stream, 1, 77))
        else {
            panic!("no DNS message");
        };
        assert!(complete);
        assert_eq!(message, query);
        let parsed = Message::from_bytes(&message).expect("decodable");
        assert_eq!(parsed.queries[0].name().to_ascii(), "quay.io.");

        // Two messages in the first segment: the first one, at once.
        let mut two = stream.clone();
        two.extend(length_prefixed(&dns_query("docker.io.")));
        let mut assembler = StreamAssembler::new(Mode::DnsTcp);
        assert_eq!(
            assembler.push(segment(0, &two)),
            Progress::Done(StreamFinding::DnsMessage {
                message: query,
                complete: true
            })
        );
    }

    #[test]
    fn dns_over_tcp_response_cut_short_keeps_its_head() {
        let response = dns_response("quay.io.", 200);
        let stream = length_prefixed(&response);
        assert!(stream.len() > 2048);
        let cut = Segment {
            seq: 0,
            wire_len: stream.len() as u32,
            captured: &stream[..2048],
        };
        let mut assembler = StreamAssembler::new(Mode::DnsTcp);
        assert_eq!(
            assembler.push(cut),
            Progress::Done(StreamFinding::DnsMessage {
                message: response[..2046].to_vec(),
                complete: false
            })
        );
        // Too little for a DNS header: counted, not passed on.
        assert_eq!(
            assemble(Mode::DnsTcp, &[(0, &stream[..10])]),
            unparsed(Parser::DnsTcp, UnparsedReason::Incomplete)
        );
        assert_eq!(
            assemble(Mode::DnsTcp, &[(0, &[0, 0, 1, 2])]),
            unparsed(Parser::DnsTcp, UnparsedReason::BadLength)
        );
    }

    #[test]
    fn random_streams_always_end_in_exactly_one_finding() {
        let mut prng = Prng::new(0xdecaf);
        let hello = rustls_client_hello("quay.io");
        let mut stats = PayloadStats::default();
        for round in 0..600 {
            // Start like TLS, HTTP or noise, so every parser sees garbage.
            let mut stream = match round % 4 {
                0 => hello[..prng.below(hello.len())].to_vec(),
                1 => b"GET ".to_vec(),
                2 => b"CONNECT ".to_vec(),
                _ => Vec::new(),
            };
            // Short streams too, so that some end before a DNS header.
            let noise_len = prng.below(if round % 3 == 0 { 20 } else { 3000 });
            stream.extend(prng.bytes(noise_len));
            let mode = if round % 5 == 0 {
                Mode::DnsTcp
            } else {
                Mode::Auto
            };
            let mut assembler = StreamAssembler::new(mode);
            let mut offset = 0;
            let mut finding = None;
            for _ in 0..4 {
                if offset >= stream.len() {
                    break;
                }
                let len = 1 + prng.below(2048).min(stream.len() - offset - 1);
                let bytes = &stream[offset..offset + len];
                let seq = offset as u32;
                offset += len;
                if let Progress::Done(found) = assembler.push(segment(seq, bytes)) {
                    finding = Some(found);
                    break;
                }
            }
            let finding = finding.or_else(|| assembler.finish());
            if stream.is_empty() {
                assert_eq!(finding, None);
                continue;
            }
            let finding = finding.expect("a stream with bytes yields a finding");
            assert_eq!(assembler.finish(), None, "one finding per stream");
            match &finding {
                StreamFinding::Tls { sni: Some(name) } => {
                    assert_eq!(host_name(name.as_bytes()).as_ref(), Ok(name));
                }
                StreamFinding::HttpConnect { host, .. }
                | StreamFinding::HttpRequest {
                    host: Some(host), ..
                } => {
                    assert!(
                        http_request::authority(host).is_ok() || host.contains(':'),
                        "{host}"
                    );
                }
                _ => {}
            }
            stats::count(&mut stats, &finding);
        }
        // Noise must exercise failures of every parser.
        for parser in [Parser::Tls, Parser::Http, Parser::DnsTcp] {
            assert!(
                stats::of_parser(&stats, parser).unparsed_total() > 0,
                "{stats:?}"
            );
        }
        assert!(stats.not_recognized > 0, "{stats:?}");
    }
}
