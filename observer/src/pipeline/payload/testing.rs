//! Test helpers shared by the payload parsers' tests: real ClientHellos from
//! rustls, a deterministic PRNG, and segmenting a byte stream.

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

use super::{Mode, Progress, Segment, StreamAssembler, StreamFinding};

/// The bytes rustls writes to start a handshake with `server` (a name, or an
/// IP address, which rustls sends no SNI for). rustls 0.23's aws-lc-rs
/// provider offers an X25519MLKEM768 key share, as Go >= 1.24 does.
pub fn rustls_client_hello(server: &str) -> Vec<u8> {
    // Named rather than the process default, so a second provider compiled
    // in later cannot make rustls refuse to pick one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // The handshake never gets far enough to verify a certificate, so no
    // roots are needed.
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let server = ServerName::try_from(server.to_owned()).expect("valid server name");
    let mut connection = ClientConnection::new(Arc::new(config), server).expect("client");
    let mut wire = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut wire).expect("write to a Vec");
    }
    wire
}

/// xorshift64: reproducible noise for fuzz-like tests, no dependency.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In `0..bound` (bound > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The stream cut into segments of `size` bytes, numbered from `base_seq`.
pub fn split(stream: &[u8], size: usize, base_seq: u32) -> Vec<(u32, &[u8])> {
    stream
        .chunks(size)
        .enumerate()
        .map(|(index, chunk)| (base_seq.wrapping_add((index * size) as u32), chunk))
        .collect()
}

/// Pushes whole segments in order until the stream is decided, then
/// finishes it: the one finding the stream yields.
pub fn assemble(mode: Mode, segments: &[(u32, &[u8])]) -> StreamFinding {
    let mut assembler = StreamAssembler::new(mode);
    for &(seq, bytes) in segments {
        let segment = Segment {
            seq,
            wire_len: bytes.len() as u32,
            captured: bytes,
        };
        if let Progress::Done(finding) = assembler.push(segment) {
            return finding;
        }
    }
    assembler
        .finish()
        .expect("a stream with bytes yields a finding")
}

/// A DNS query as a resolver sends it.
pub fn dns_query(name: &str) -> Vec<u8> {
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RecordType},
        serialize::binary::BinEncodable,
    };
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    message.to_bytes().expect("encodable")
}

/// A DNS response with `answers` A records for `name`.
pub fn dns_response(name: &str, answers: u8) -> Vec<u8> {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RData, Record, RecordType, rdata},
        serialize::binary::BinEncodable,
    };
    let owner = Name::from_ascii(name).expect("name");
    let mut message = Message::new(0x4242, MessageType::Response, OpCode::Query);
    message.add_query(Query::query(owner.clone(), RecordType::A));
    for index in 0..answers {
        let address = Ipv4Addr::new(198, 18, 0, index);
        message.add_answer(Record::from_rdata(
            owner.clone(),
            30,
            RData::A(rdata::A(address)),
        ));
    }
    message.to_bytes().expect("encodable")
}

/// `message` with its DNS-over-TCP length prefix.
pub fn length_prefixed(message: &[u8]) -> Vec<u8> {
    let mut stream = u16::try_from(message.len())
        .expect("fits a length prefix")
        .to_be_bytes()
        .to_vec();
    stream.extend_from_slice(message);
    stream
}
