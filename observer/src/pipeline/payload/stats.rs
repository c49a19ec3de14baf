//! Counts of what the payload parsers made of the streams they saw, for the
//! report's `observer` section.

use observer_report::observer::{ParserStats, PayloadStats};

use super::{Parser, StreamFinding};

/// Counts one finding under its parser (and reason, when unparsed).
pub fn count(stats: &mut PayloadStats, finding: &StreamFinding) {
    match finding {
        StreamFinding::Tls { .. } => stats.tls.parsed += 1,
        StreamFinding::HttpConnect { .. } | StreamFinding::HttpRequest { .. } => {
            stats.http.parsed += 1
        }
        StreamFinding::DnsMessage { complete, .. } => {
            stats.dns_tcp.parsed += 1;
            if !complete {
                stats.dns_tcp_partial += 1;
            }
        }
        StreamFinding::Unparsed { parser, reason } => {
            *parser_mut(stats, *parser)
                .unparsed
                .entry(reason.as_str().to_string())
                .or_default() += 1;
        }
        StreamFinding::NotRecognized => stats.not_recognized += 1,
    }
}

/// One parser's counts.
pub fn of_parser(stats: &PayloadStats, parser: Parser) -> &ParserStats {
    match parser {
        Parser::Tls => &stats.tls,
        Parser::Http => &stats.http,
        Parser::DnsTcp => &stats.dns_tcp,
    }
}

fn parser_mut(stats: &mut PayloadStats, parser: Parser) -> &mut ParserStats {
    match parser {
        Parser::Tls => &mut stats.tls,
        Parser::Http => &mut stats.http,
        Parser::DnsTcp => &mut stats.dns_tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::payload::UnparsedReason;

    #[test]
    fn counts_each_finding_under_its_parser_and_reason() {
        let mut stats = PayloadStats::default();
        let findings = [
            StreamFinding::Tls {
                sni: Some("quay.io".into()),
            },
            StreamFinding::Tls { sni: None },
            StreamFinding::HttpConnect {
                host: "quay.io".into(),
                port: 443,
            },
            StreamFinding::DnsMessage {
                message: vec![0; 12],
                complete: false,
            },
            StreamFinding::Unparsed {
                parser: Parser::Tls,
                reason: UnparsedReason::Gap,
            },
            StreamFinding::Unparsed {
                parser: Parser::Tls,
                reason: UnparsedReason::Gap,
            },
            StreamFinding::Unparsed {
                parser: Parser::Http,
                reason: UnparsedReason::TooManyHeaders,
            },
            StreamFinding::NotRecognized,
        ];
        for finding in &findings {
            count(&mut stats, finding);
        }
        assert_eq!(of_parser(&stats, Parser::Tls).unparsed_total(), 2);
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            serde_json::json!({
                "tls": {"parsed": 2, "unparsed": {"gap": 2}},
                "http": {"parsed": 1, "unparsed": {"too_many_headers": 1}},
                "dns_tcp": {"parsed": 1, "unparsed": {}},
                "dns_tcp_partial": 1,
                "not_recognized": 1,
            })
        );
    }
}
