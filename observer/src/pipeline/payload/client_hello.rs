//! TLS: the server name (SNI) from a client's first flight.
//!
//! A ClientHello with a post-quantum key share (Go >= 1.24, rustls 0.23) is
//! ~1.8 KiB: it spans two TCP segments, and a client may also split it over
//! several TLS records. This module joins the records' fragments into the one
//! handshake message; tls-parser decodes the record headers, the ClientHello
//! and the SNI extension.

use std::borrow::Cow;

use tls_parser::{
    TlsExtension, TlsRecordType, parse_tls_extension_sni_content, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, parse_tls_record_header,
};

use super::{PREFIX_LIMIT, ParseStep, Recognition, UnparsedReason, host_name};

/// ContentType `handshake` (RFC 8446 §5.1): the first byte of a ClientHello.
pub const RECORD_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
const MAX_PLAINTEXT_RECORD_LEN: usize = 1 << 14;
/// SNI extension type (RFC 6066 §3) and its `host_name` entry type.
const EXTENSION_SERVER_NAME: u16 = 0;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;

/// A stream is TLS when it starts with a handshake record of a TLS version
/// (major 3, minor 0 to 4: SSL 3.0 to TLS 1.3 record versions) whose first
/// handshake message is a ClientHello.
pub fn recognize(prefix: &[u8]) -> Recognition {
    // Record type, version major, version minor, then (after the 2-byte
    // record length) the handshake type.
    let checks = [
        prefix.first().map(|&b| b == RECORD_TYPE_HANDSHAKE),
        prefix.get(1).map(|&b| b == 3),
        prefix.get(2).map(|&b| b <= 4),
        prefix.get(5).map(|&b| b == HANDSHAKE_TYPE_CLIENT_HELLO),
    ];
    if checks.contains(&Some(false)) {
        Recognition::No
    } else if checks.contains(&None) {
        Recognition::NeedMore
    } else {
        Recognition::Yes
    }
}

/// The server name of the ClientHello the prefix starts with: `Done(None)`
/// when the client sent no SNI, `NeedMore` while the message is incomplete.
pub fn server_name(prefix: &[u8]) -> ParseStep<Option<String>> {
    let mut rest = prefix;
    // The handshake message, borrowed while one record holds it (a classic
    // ClientHello), copied once it spans records.
    let mut handshake: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        if rest.len() < RECORD_HEADER_LEN {
            return ParseStep::NeedMore;
        }
        let Ok((after_header, header)) = parse_tls_record_header(rest) else {
            return ParseStep::Failed(UnparsedReason::Malformed);
        };
        if header.record_type != TlsRecordType::Handshake || header.version.0 >> 8 != 3 {
            // An alert or data record inside the ClientHello.
            return ParseStep::Failed(UnparsedReason::Malformed);
        }
        let record_len = usize::from(header.len);
        // RFC 8446 §5.1: zero-length handshake fragments must not be sent.
        if record_len == 0 || record_len > MAX_PLAINTEXT_RECORD_LEN {
            return ParseStep::Failed(UnparsedReason::BadLength);
        }
        let available = after_header.len().min(record_len);
        let fragment = &after_header[..available];
        if handshake.is_empty() {
            handshake = Cow::Borrowed(fragment);
        } else {
            handshake.to_mut().extend_from_slice(fragment);
        }
        rest = &after_header[available..];

        if handshake.len() >= HANDSHAKE_HEADER_LEN {
            if handshake[0] != HANDSHAKE_TYPE_CLIENT_HELLO {
                return ParseStep::Failed(UnparsedReason::NotClientHello);
            }
            let body_len = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            // Reject at once what could never fit, rather than waiting for
            // segments that only fill the buffer.
            if body_len > PREFIX_LIMIT {
                return ParseStep::Failed(UnparsedReason::TooLong);
            }
            if let Some(body) = handshake.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + body_len)
            {
                return client_hello_server_name(body);
            }
        }
        if available < record_len {
            return ParseStep::NeedMore;
        }
    }
}

/// SNI from a complete ClientHello body (after the handshake header).
fn client_hello_server_name(body: &[u8]) -> ParseStep<Option<String>> {
    let Ok((_, hello)) = parse_tls_handshake_client_hello(body) else {
        return ParseStep::Failed(UnparsedReason::Malformed);
    };
    let Some(mut extensions) = hello.ext else {
        return ParseStep::Done(None);
    };
    // Walk the extensions generically and decode only the server name, so a
    // quirk in an extension we do not need cannot hide the SNI.
    while !extensions.is_empty() {
        let Ok((next, TlsExtension::Unknown(extension_type, data))) =
            parse_tls_extension_unknown(extensions)
        else {
            return ParseStep::Failed(UnparsedReason::Malformed);
        };
        extensions = next;
        if extension_type.0 != EXTENSION_SERVER_NAME {
            continue;
        }
        let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(data) else {
            return ParseStep::Failed(UnparsedReason::Malformed);
        };
        // RFC 6066: at most one name per type; host_name is the only type.
        return match names
            .iter()
            .find(|(name_type, _)| name_type.0 == SERVER_NAME_TYPE_HOST_NAME)
        {
            None => ParseStep::Done(None),
            Some((_, name)) => match host_name(name) {
                Ok(name) => ParseStep::Done(Some(name)),
                Err(reason) => ParseStep::Failed(reason),
            },
        };
    }
    ParseStep::Done(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::payload::testing::{Prng, rustls_client_hello};

    /// A minimal ClientHello record with the given extension block.
    fn client_hello_record(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01, 1, 0]);
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![HANDSHAKE_TYPE_CLIENT_HELLO];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![RECORD_TYPE_HANDSHAKE, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![SERVER_NAME_TYPE_HOST_NAME];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut extension = EXTENSION_SERVER_NAME.to_be_bytes().to_vec();
        extension.extend((list.len() as u16).to_be_bytes());
        extension.extend(list);
        extension
    }

    /// The single-record handshake `stream` re-sent as records of at most
    /// `fragment_len` bytes, as a client may.
    fn refragment(stream: &[u8], fragment_len: usize) -> Vec<u8> {
        let record_len = usize::from(u16::from_be_bytes([stream[3], stream[4]]));
        assert_eq!(record_len + RECORD_HEADER_LEN, stream.len(), "one record");
        let mut records = Vec::new();
        for fragment in stream[RECORD_HEADER_LEN..].chunks(fragment_len) {
            records.extend(&stream[..3]);
            records.extend((fragment.len() as u16).to_be_bytes());
            records.extend(fragment);
        }
        records
    }

    #[test]
    fn post_quantum_client_hello_needs_two_segments_and_yields_sni() {
        let hello = rustls_client_hello("quay.io");
        // X25519MLKEM768 adds a 1216-byte key share: more than one 1448-byte
        // segment (MSS with timestamps), like a Go >= 1.24 ClientHello.
        assert!(
            (1449..2200).contains(&hello.len()),
            "ClientHello is {} bytes",
            hello.len()
        );
        // key_share entry: group X25519MLKEM768 (0x11ec) with a 1184-byte
        // ML-KEM-768 key and a 32-byte X25519 key.
        assert!(
            hello
                .windows(4)
                .any(|entry| entry == [0x11, 0xec, 0x04, 0xc0])
        );
        assert_eq!(recognize(&hello), Recognition::Yes);
        assert_eq!(server_name(&hello), ParseStep::Done(Some("quay.io".into())));
    }

    #[test]
    fn every_proper_prefix_of_a_client_hello_needs_more() {
        let hello = rustls_client_hello("registry.redhat.io");
        for cut in 0..hello.len() {
            let prefix = &hello[..cut];
            assert_ne!(recognize(prefix), Recognition::No, "cut {cut}");
            assert_eq!(server_name(prefix), ParseStep::NeedMore, "cut {cut}");
        }
    }

    #[test]
    fn client_hello_split_over_records_is_joined() {
        let hello = rustls_client_hello("cdn01.quay.io");
        for fragment_len in [1, 7, 100, 512, 1400] {
            let records = refragment(&hello, fragment_len);
            assert_eq!(
                server_name(&records),
                ParseStep::Done(Some("cdn01.quay.io".into())),
                "fragments of {fragment_len}"
            );
            assert_eq!(
                server_name(&records[..records.len() - 1]),
                ParseStep::NeedMore
            );
        }
    }

    #[test]
    fn connecting_to_an_address_sends_no_sni() {
        let hello = rustls_client_hello("198.18.0.1");
        assert_eq!(server_name(&hello), ParseStep::Done(None));
        assert_eq!(
            server_name(&client_hello_record(&[])),
            ParseStep::Done(None)
        );
    }

    #[test]
    fn names_are_lower_cased_without_trailing_dot() {
        let record = client_hello_record(&sni_extension(b"Registry.Access.RedHat.COM."));
        assert_eq!(
            server_name(&record),
            ParseStep::Done(Some("registry.access.redhat.com".into()))
        );
    }

    #[test]
    fn invalid_names_are_rejected_not_guessed() {
        let long_label = [b'a'; 64];
        // 255 bytes once the trailing dot is dropped.
        let long_name = [b"a.".as_slice(); 128].concat();
        let cases: [&[u8]; 8] = [
            b"",
            b"\xff\xfe.example",
            b"qu\xc3\xa4y.io",
            b"quay io",
            b"a..b",
            b".",
            &long_label,
            &long_name,
        ];
        for name in cases {
            assert_eq!(
                server_name(&client_hello_record(&sni_extension(name))),
                ParseStep::Failed(UnparsedReason::InvalidHost),
                "{name:?}"
            );
        }
    }

    #[test]
    fn bytes_after_the_client_hello_are_ignored() {
        let mut stream = rustls_client_hello("quay.io");
        stream.extend([0x17, 3, 3, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(
            server_name(&stream),
            ParseStep::Done(Some("quay.io".into()))
        );
    }

    #[test]
    fn absurd_lengths_are_rejected_from_the_headers_alone() {
        // Record longer than 2^14, and an empty record.
        assert_eq!(
            server_name(&[0x16, 3, 1, 0x40, 0x01, 1]),
            ParseStep::Failed(UnparsedReason::BadLength)
        );
        assert_eq!(
            server_name(&[0x16, 3, 1, 0, 0, 1]),
            ParseStep::Failed(UnparsedReason::BadLength)
        );
        // A 16 MiB ClientHello announced in its first nine bytes.
        assert_eq!(
            server_name(&[0x16, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff]),
            ParseStep::Failed(UnparsedReason::TooLong)
        );
    }

    #[test]
    fn other_handshakes_and_records_are_not_client_hellos() {
        // A ServerHello is not recognized as a client's first flight.
        let mut server_hello = client_hello_record(&[]);
        server_hello[RECORD_HEADER_LEN] = 2;
        assert_eq!(recognize(&server_hello), Recognition::No);
        assert_eq!(
            server_name(&server_hello),
            ParseStep::Failed(UnparsedReason::NotClientHello)
        );
        for not_tls in [
            b"\x17\x03\x03".as_slice(),
            b"\x16\x02",
            b"\x16\x03\x05",
            b"SSH-2.0",
        ] {
            assert_eq!(recognize(not_tls), Recognition::No, "{not_tls:?}");
        }
        // An alert record in the middle of a fragmented ClientHello.
        let mut records = refragment(&rustls_client_hello("quay.io"), 100);
        records[105] = 0x15;
        assert_eq!(
            server_name(&records),
            ParseStep::Failed(UnparsedReason::Malformed)
        );
    }

    #[test]
    fn malformed_extensions_are_rejected() {
        // Extension list claims more bytes than it has.
        let record = client_hello_record(&[0, 0, 0, 9, 0]);
        assert_eq!(
            server_name(&record),
            ParseStep::Failed(UnparsedReason::Malformed)
        );
        // A ClientHello body cut inside its cipher suites.
        // Record of 39 bytes: handshake header and a 35-byte body (version,
        // random, empty session id) that stops before the cipher suites.
        let mut short = vec![0x16, 3, 1, 0, 39, 1, 0, 0, 35, 3, 3];
        short.extend([0u8; 32]);
        short.push(0);
        assert_eq!(
            server_name(&short),
            ParseStep::Failed(UnparsedReason::Malformed)
        );
    }

    #[test]
    fn mutated_client_hellos_never_panic_and_never_yield_an_invalid_name() {
        let hello = rustls_client_hello("quay.io");
        let mut prng = Prng::new(0x5eed);
        let mut outcomes = [0usize; 3];
        for _ in 0..3000 {
            let mut mutated = hello.clone();
            for _ in 0..=prng.below(4) {
                let at = prng.below(mutated.len());
                mutated[at] = prng.next_u64() as u8;
            }
            match server_name(&mutated) {
                ParseStep::NeedMore => outcomes[0] += 1,
                ParseStep::Done(name) => {
                    outcomes[1] += 1;
                    if let Some(name) = name {
                        assert_eq!(host_name(name.as_bytes()), Ok(name.clone()));
                    }
                }
                ParseStep::Failed(_) => outcomes[2] += 1,
            }
        }
        // Most single-byte changes land in random or key-share bytes and
        // still parse; some must hit a length or the name.
        assert!(outcomes[1] > 0 && outcomes[2] > 0, "{outcomes:?}");
    }

    #[test]
    fn complete_client_hellos_of_random_bytes_are_always_decided() {
        let mut prng = Prng::new(7);
        for _ in 0..2000 {
            // A record holding a whole handshake message whose body is noise.
            let body_len = prng.below(600);
            let mut stream = vec![0x16, 3, 1];
            stream.extend(((body_len + HANDSHAKE_HEADER_LEN) as u16).to_be_bytes());
            stream.push(HANDSHAKE_TYPE_CLIENT_HELLO);
            stream.extend(&(body_len as u32).to_be_bytes()[1..]);
            stream.extend(prng.bytes(body_len));
            match server_name(&stream) {
                ParseStep::NeedMore => panic!("a complete message left undecided: {stream:?}"),
                ParseStep::Done(Some(name)) => assert_eq!(host_name(name.as_bytes()), Ok(name)),
                ParseStep::Done(None) | ParseStep::Failed(_) => {}
            }
        }
    }
}
