//! HTTP/1.x: which host a request is for, so that a pull through a
//! cluster-wide proxy is attributed to the registry, not to the proxy.
//!
//! httparse reads the request line and headers. A `CONNECT host:port` or an
//! absolute-form target (`GET http://host/...`) names the host in the request
//! line and is decided as soon as that line is complete; an origin-form
//! request (`GET /v2/`) needs the whole header block for its `Host`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ParseStep, Recognition, UnparsedReason, host_name};

/// Header fields read before giving up: real requests send about ten, a
/// stream with more is not one worth reading.
pub const MAX_HEADERS: usize = 64;

/// Request methods that start a stream we read (RFC 9110 §9 and PATCH).
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// What a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Connect { host: String, port: u16 },
    Request { host: Option<String> },
}

/// A stream is HTTP when it starts with a known method and a space.
pub fn recognize(prefix: &[u8]) -> Recognition {
    let mut undecided = false;
    for method in METHODS {
        let token_len = method.len() + 1;
        let compared = prefix.len().min(token_len);
        let matches = prefix[..compared]
            .iter()
            .zip(method.iter().chain(b" "))
            .all(|(got, want)| got == want);
        if matches {
            if compared == token_len {
                return Recognition::Yes;
            }
            undecided = true;
        }
    }
    if undecided {
        Recognition::NeedMore
    } else {
        Recognition::No
    }
}

/// The target of the request the prefix starts with.
pub fn parse_request(prefix: &[u8]) -> ParseStep<Target> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = match request.parse(prefix) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return ParseStep::Failed(UnparsedReason::TooManyHeaders);
        }
        Err(_) => return ParseStep::Failed(UnparsedReason::Malformed),
    };
    // httparse fills method, path and version as it reads them, so a
    // request line is usable before the headers are complete.
    if let (Some(method), Some(path), Some(_)) = (request.method, request.path, request.version)
        && let Some(outcome) = target_from_request_line(method, path)
    {
        return outcome;
    }
    if status.is_partial() {
        return ParseStep::NeedMore;
    }
    let mut hosts = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("host"));
    let host = match (hosts.next(), hosts.next()) {
        (None, _) => return ParseStep::Done(Target::Request { host: None }),
        (Some(host), None) => host,
        // RFC 9112 §3.2: a request with more than one Host is invalid.
        (Some(_), Some(_)) => return ParseStep::Failed(UnparsedReason::InvalidHost),
    };
    match std::str::from_utf8(host.value)
        .ok()
        .and_then(|value| authority(value.trim()).ok())
    {
        Some((host, _port)) => ParseStep::Done(Target::Request { host: Some(host) }),
        None => ParseStep::Failed(UnparsedReason::InvalidHost),
    }
}

/// The target when the request line names the host: `CONNECT` (authority
/// form) or an absolute URI. `None` for origin form (`/path`, `*`).
fn target_from_request_line(method: &str, path: &str) -> Option<ParseStep<Target>> {
    if method == "CONNECT" {
        return Some(match authority(path) {
            Ok((host, Some(port))) => ParseStep::Done(Target::Connect { host, port }),
            Ok((_, None)) | Err(_) => ParseStep::Failed(UnparsedReason::InvalidHost),
        });
    }
    // RFC 9112 §3.2.2: with an absolute-form target the URI's host wins
    // over the Host header.
    let (_scheme, after_scheme) = path.split_once("://")?;
    let authority_text = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    Some(match authority(authority_text) {
        Ok((host, _port)) => ParseStep::Done(Target::Request { host: Some(host) }),
        Err(reason) => ParseStep::Failed(reason),
    })
}

/// Splits `host[:port]` (RFC 3986 authority, userinfo dropped) into a
/// validated host and its port. IPv6 literals come bracketed and are
/// returned without brackets; names are lower-cased.
pub fn authority(text: &str) -> Result<(String, Option<u16>), UnparsedReason> {
    let invalid = UnparsedReason::InvalidHost;
    let text = text.rsplit_once('@').map_or(text, |(_userinfo, rest)| rest);
    let (host, port_text) = if let Some(bracketed) = text.strip_prefix('[') {
        let (literal, after) = bracketed.split_once(']').ok_or(invalid)?;
        let address: Ipv6Addr = literal.parse().map_err(|_| invalid)?;
        let port_text = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(invalid)?),
        };
        (address.to_string(), port_text)
    } else {
        let (host_text, port_text) = match text.split_once(':') {
            Some((host_text, port_text)) => (host_text, Some(port_text)),
            None => (text, None),
        };
        let host = match host_text.parse::<Ipv4Addr>() {
            Ok(address) => address.to_string(),
            Err(_) => host_name(host_text.as_bytes())?,
        };
        (host, port_text)
    };
    let port = match port_text {
        // RFC 3986 §3.2.3 allows an empty port: the scheme's default.
        None | Some("") => None,
        Some(digits) => Some(port_number(digits).ok_or(invalid)?),
    };
    Ok((host, port))
}

/// 1 to 65535, digits only (`str::parse` would accept a leading `+`).
fn port_number(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What curl 8 sends to an HTTPS proxy target (`curl -x`).
    const CURL_CONNECT: &[u8] = b"CONNECT quay.io:443 HTTP/1.1\r\nHost: quay.io:443\r\n\
        User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n";
    /// What Go's net/http (skopeo, CRI-O, kubelet) sends with HTTPS_PROXY.
    const GO_CONNECT: &[u8] = b"CONNECT registry.redhat.io:443 HTTP/1.1\r\n\
        Host: registry.redhat.io:443\r\nUser-Agent: Go-http-client/1.1\r\n\r\n";
    const GET_WITH_HOST: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: Registry.Example:5000\r\n\
        User-Agent: containers/5.32.2 (github.com/containers/image)\r\n\
        Accept-Encoding: gzip\r\n\r\n";

    fn connect(host: &str, port: u16) -> ParseStep<Target> {
        ParseStep::Done(Target::Connect {
            host: host.into(),
            port,
        })
    }

    fn request(host: Option<&str>) -> ParseStep<Target> {
        ParseStep::Done(Target::Request {
            host: host.map(Into::into),
        })
    }

    #[test]
    fn proxy_connects_name_their_target() {
        assert_eq!(parse_request(CURL_CONNECT), connect("quay.io", 443));
        assert_eq!(
            parse_request(GO_CONNECT),
            connect("registry.redhat.io", 443)
        );
        assert_eq!(
            parse_request(b"CONNECT [2001:DB8::1]:5000 HTTP/1.1\r\n\r\n"),
            connect("2001:db8::1", 5000)
        );
        assert_eq!(
            parse_request(b"CONNECT 198.18.0.7:443 HTTP/1.1\r\n\r\n"),
            connect("198.18.0.7", 443)
        );
    }

    #[test]
    fn connect_is_decided_once_its_request_line_is_read() {
        let line_end = CURL_CONNECT
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .unwrap();
        for cut in 0..CURL_CONNECT.len() {
            let expected = if cut >= line_end {
                connect("quay.io", 443)
            } else {
                ParseStep::NeedMore
            };
            assert_eq!(parse_request(&CURL_CONNECT[..cut]), expected, "cut {cut}");
        }
    }

    #[test]
    fn plain_requests_name_the_host_header_without_port() {
        assert_eq!(
            parse_request(GET_WITH_HOST),
            request(Some("registry.example"))
        );
        assert_eq!(
            parse_request(b"HEAD /v2/ HTTP/1.1\r\nhost: [::1]:5000\r\n\r\n"),
            request(Some("::1"))
        );
        // HTTP/1.0 needs no Host.
        assert_eq!(parse_request(b"GET / HTTP/1.0\r\n\r\n"), request(None));
    }

    #[test]
    fn absolute_form_targets_win_over_host() {
        let through_proxy = b"GET http://user:pw@Mirror.OpenShift.com:80/pub?x#y HTTP/1.1\r\n\
            Host: proxy.internal:3128\r\n\r\n";
        assert_eq!(
            parse_request(through_proxy),
            request(Some("mirror.openshift.com"))
        );
        // Decided from the request line alone.
        assert_eq!(
            parse_request(b"GET http://quay.io/v2/ HTTP/1.1\r\nHo"),
            request(Some("quay.io"))
        );
    }

    #[test]
    fn origin_form_requests_wait_for_the_whole_header_block() {
        for cut in 0..GET_WITH_HOST.len() {
            assert_eq!(
                parse_request(&GET_WITH_HOST[..cut]),
                ParseStep::NeedMore,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn garbage_authorities_are_invalid_hosts() {
        for target in [
            "quay.io",
            "quay.io:",
            "quay.io:0",
            "quay.io:65536",
            "quay.io:99999999999",
            "quay.io:+443",
            "quay.io:443x",
            "quay.io:443:443",
            ":443",
            "[::1:443",
            "[zz::1]:443",
            "[::1]443",
            "::1:443",
            "a..b:443",
            "-_-.%41:443",
        ] {
            let line = format!("CONNECT {target} HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse_request(line.as_bytes()),
                ParseStep::Failed(UnparsedReason::InvalidHost),
                "{target}"
            );
        }
        let long = format!("CONNECT {}.io:443 HTTP/1.1\r\n\r\n", "a".repeat(250));
        assert_eq!(
            parse_request(long.as_bytes()),
            ParseStep::Failed(UnparsedReason::InvalidHost)
        );
    }

    #[test]
    fn bad_host_headers_are_invalid_hosts() {
        for head in [
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".as_slice(),
            b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: quay.io:https\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            b"GET http://:80/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(head),
                ParseStep::Failed(UnparsedReason::InvalidHost),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn header_floods_are_cut_off_at_the_bound() {
        let mut flood = b"GET / HTTP/1.1\r\n".to_vec();
        for index in 0..10_000 {
            flood.extend(format!("X-{index}: y\r\n").as_bytes());
        }
        flood.extend(b"Host: quay.io\r\n\r\n");
        assert_eq!(
            parse_request(&flood),
            ParseStep::Failed(UnparsedReason::TooManyHeaders)
        );
        // Exactly the bound still parses.
        let mut at_bound = b"GET / HTTP/1.1\r\nHost: quay.io\r\n".to_vec();
        for index in 1..MAX_HEADERS {
            at_bound.extend(format!("X-{index}: y\r\n").as_bytes());
        }
        at_bound.extend(b"\r\n");
        assert_eq!(parse_request(&at_bound), request(Some("quay.io")));
    }

    #[test]
    fn broken_request_lines_are_malformed() {
        for head in [
            b"GET /\x01 HTTP/1.1\r\n\r\n".as_slice(),
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_request(head),
                ParseStep::Failed(UnparsedReason::Malformed),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn methods_are_recognized_by_their_token() {
        assert_eq!(recognize(b""), Recognition::NeedMore);
        assert_eq!(recognize(b"CONN"), Recognition::NeedMore);
        assert_eq!(recognize(b"CONNECT"), Recognition::NeedMore);
        assert_eq!(recognize(b"CONNECT "), Recognition::Yes);
        assert_eq!(recognize(b"PUT /"), Recognition::Yes);
        for other in [
            b"GETX".as_slice(),
            b"get ",
            b"SSH-2.0",
            b"PRI * HTTP/2.0",
            b"\x16\x03",
        ] {
            assert_eq!(recognize(other), Recognition::No, "{other:?}");
        }
    }
}
