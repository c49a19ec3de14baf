//! Counts of what the payload parsers made of the streams they saw, for the
//! report's `observer` section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Finding, Parser};

/// Per parser: streams parsed and streams rejected, by reason.
///
/// Serializes as `{"tls":{"parsed":N,"unparsed":{"gap":N,...}},"http":...,
/// "dns_tcp":...,"dns_tcp_partial":N,"not_recognized":N}`; reads back (by
/// `report merge`) with absent parts as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayloadStats {
    pub tls: ParserStats,
    pub http: ParserStats,
    pub dns_tcp: ParserStats,
    /// DNS-over-TCP messages the stream ended inside, passed on cut short
    /// (also counted in `dns_tcp.parsed`).
    pub dns_tcp_partial: u64,
    /// Streams no parser claimed: other protocols, not errors.
    pub not_recognized: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParserStats {
    pub parsed: u64,
    /// Keyed by [`super::UnparsedReason::as_str`]; only reasons that
    /// occurred appear.
    pub unparsed: BTreeMap<String, u64>,
}

impl ParserStats {
    /// Streams this parser rejected, whatever the reason (the issue's
    /// `sni_unparsed` for TLS).
    pub fn unparsed_total(&self) -> u64 {
        self.unparsed.values().sum()
    }
}

impl PayloadStats {
    pub fn record(&mut self, finding: &Finding) {
        match finding {
            Finding::Tls { .. } => self.tls.parsed += 1,
            Finding::HttpConnect { .. } | Finding::HttpRequest { .. } => self.http.parsed += 1,
            Finding::DnsMessage { complete, .. } => {
                self.dns_tcp.parsed += 1;
                if !complete {
                    self.dns_tcp_partial += 1;
                }
            }
            Finding::Unparsed { parser, reason } => {
                *self
                    .parser_mut(*parser)
                    .unparsed
                    .entry(reason.as_str().to_string())
                    .or_default() += 1;
            }
            Finding::NotRecognized => self.not_recognized += 1,
        }
    }

    pub fn parser(&self, parser: Parser) -> &ParserStats {
        match parser {
            Parser::Tls => &self.tls,
            Parser::Http => &self.http,
            Parser::DnsTcp => &self.dns_tcp,
        }
    }

    fn parser_mut(&mut self, parser: Parser) -> &mut ParserStats {
        match parser {
            Parser::Tls => &mut self.tls,
            Parser::Http => &mut self.http,
            Parser::DnsTcp => &mut self.dns_tcp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::UnparsedReason;

    #[test]
    fn counts_each_finding_under_its_parser_and_reason() {
        let mut stats = PayloadStats::default();
        let findings = [
            Finding::Tls {
                sni: Some("quay.io".into()),
            },
            Finding::Tls { sni: None },
            Finding::HttpConnect {
                host: "quay.io".into(),
                port: 443,
            },
            Finding::DnsMessage {
                message: vec![0; 12],
                complete: false,
            },
            Finding::Unparsed {
                parser: Parser::Tls,
                reason: UnparsedReason::Gap,
            },
            Finding::Unparsed {
                parser: Parser::Tls,
                reason: UnparsedReason::Gap,
            },
            Finding::Unparsed {
                parser: Parser::Http,
                reason: UnparsedReason::TooManyHeaders,
            },
            Finding::NotRecognized,
        ];
        for finding in &findings {
            stats.record(finding);
        }
        assert_eq!(stats.parser(Parser::Tls).unparsed_total(), 2);
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
