//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by its
//! length as two bytes, big-endian. The message itself is parsed by the
//! decode stage's DNS decoder, as UDP payloads are.

use super::{ParseStep, UnparsedReason};

const LENGTH_PREFIX_LEN: usize = 2;
/// A DNS message has at least its 12-byte header (RFC 1035 §4.1.1).
const DNS_HEADER_LEN: usize = 12;

/// The first whole message of the stream, without its length prefix.
/// The prefix is a u16, so no message can exceed 65535 bytes; one shorter
/// than a DNS header (including zero) is rejected at once.
pub fn first_message(prefix: &[u8]) -> ParseStep<&[u8]> {
    let Some(message_len) = declared_len(prefix) else {
        return ParseStep::NeedMore;
    };
    if message_len < DNS_HEADER_LEN {
        return ParseStep::Failed(UnparsedReason::BadLength);
    }
    match prefix.get(LENGTH_PREFIX_LEN..LENGTH_PREFIX_LEN + message_len) {
        Some(message) => ParseStep::Done(message),
        None => ParseStep::NeedMore,
    }
}

/// What is held of a first message that the stream ended inside: usable
/// when it has at least the DNS header and a sane length.
pub fn partial_message(prefix: &[u8]) -> Option<&[u8]> {
    let message_len = declared_len(prefix)?;
    let held = &prefix[LENGTH_PREFIX_LEN..];
    (message_len >= DNS_HEADER_LEN && held.len() >= DNS_HEADER_LEN)
        .then(|| &held[..held.len().min(message_len)])
}

fn declared_len(prefix: &[u8]) -> Option<usize> {
    let length_bytes: [u8; LENGTH_PREFIX_LEN] = prefix.get(..LENGTH_PREFIX_LEN)?.try_into().ok()?;
    Some(usize::from(u16::from_be_bytes(length_bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::payload::testing::{dns_query, dns_response, length_prefixed};

    #[test]
    fn whole_message_is_returned_without_its_prefix() {
        let query = dns_query("quay.io.");
        let stream = length_prefixed(&query);
        assert_eq!(first_message(&stream), ParseStep::Done(query.as_slice()));
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let stream = length_prefixed(&dns_response("registry.redhat.io.", 3));
        for cut in 0..stream.len() {
            assert_eq!(
                first_message(&stream[..cut]),
                ParseStep::NeedMore,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn only_the_first_of_several_messages_is_returned() {
        let first = dns_query("quay.io.");
        let mut stream = length_prefixed(&first);
        stream.extend(length_prefixed(&dns_query("docker.io.")));
        assert_eq!(first_message(&stream), ParseStep::Done(first.as_slice()));
    }

    #[test]
    fn lengths_too_short_for_a_header_are_rejected_at_once() {
        for declared in [0u16, 1, 11] {
            let stream = declared.to_be_bytes();
            assert_eq!(
                first_message(&stream),
                ParseStep::Failed(UnparsedReason::BadLength),
                "length {declared}"
            );
            assert_eq!(partial_message(&stream), None);
        }
    }

    #[test]
    fn a_maximal_length_waits_and_a_cut_message_keeps_its_header() {
        let mut stream = u16::MAX.to_be_bytes().to_vec();
        stream.extend(dns_response("quay.io.", 2));
        assert_eq!(first_message(&stream), ParseStep::NeedMore);
        assert_eq!(partial_message(&stream), Some(&stream[2..]));
        // Header not yet complete: nothing usable.
        assert_eq!(partial_message(&stream[..2 + 11]), None);
        // Bytes after the declared end belong to the next message.
        let response = dns_response("quay.io.", 2);
        let mut two = length_prefixed(&response);
        two.extend_from_slice(&[0, 40]);
        assert_eq!(partial_message(&two), Some(response.as_slice()));
    }
}
