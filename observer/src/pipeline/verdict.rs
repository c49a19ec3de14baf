//! Policy: is a registry attempt a violation, allowed, or outside the
//! phases the policy covers?
//!
//! Pure: a decision depends only on the attempt's own phase, component,
//! unit, namespace and host, and on the time it happened (allowlist entries
//! expire). Phases change while the agent runs, so every attempt is judged
//! with its own phase, when it is recorded, never once for the whole run.

use std::time::{Duration, SystemTime};

use observer_report::{
    attempt::{Allowance, Attempt, Verdict},
    policy::{AllowReport, PolicyReport},
};
use serde::Deserialize;

use crate::pipeline::classify::Pattern;

/// Phases in which any registry contact is a violation unless allowed: the
/// promise under test is "boot and upgrade need no registry".
pub const DEFAULT_ENFORCE_PHASES: [&str; 2] = ["boot", "upgrade"];

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The `policy` section of the config file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Attempts in other phases get the verdict `not_enforced`.
    pub enforce_phases: Vec<String>,
    /// Known, accepted contacts. The first entry that matches and has not
    /// expired allows the attempt.
    pub allow: Vec<AllowRule>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            enforce_phases: DEFAULT_ENFORCE_PHASES.map(String::from).to_vec(),
            allow: Vec::new(),
        }
    }
}

/// One allowlist entry. Every selector given must match; at least one is
/// required (an entry matching everything would switch the policy off).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawAllowRule")]
pub struct AllowRule {
    /// The attempt's `component`, exactly (`skopeo`, `crio`, `pod/<uid>`).
    pub component: Option<String>,
    /// The systemd unit; `crio` also matches `crio.service`.
    pub unit: Option<String>,
    /// The pod's namespace (known once the pod is resolved through the CRI).
    pub namespace: Option<String>,
    /// The registry host: `quay.io` or `*.quay.io`. Attempts without a host
    /// name (a connect() into a catalog CIDR) match only entries without one.
    pub host: Option<Pattern>,
    pub reason: String,
    pub link: Option<String>,
    pub expires: Option<Date>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowRule {
    component: Option<String>,
    unit: Option<String>,
    namespace: Option<String>,
    host: Option<Pattern>,
    reason: Option<String>,
    link: Option<String>,
    expires: Option<Date>,
}

impl TryFrom<RawAllowRule> for AllowRule {
    type Error = String;

    fn try_from(raw: RawAllowRule) -> Result<AllowRule, String> {
        let reason = raw.reason.unwrap_or_default().trim().to_string();
        if reason.is_empty() {
            return Err(
                "an allow entry needs a `reason`; say why this contact is accepted \
                 (e.g. reason: \"OCPBUGS-13219 pre-puller uses Always\")"
                    .into(),
            );
        }
        let empty = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
        if empty(&raw.component) || empty(&raw.unit) || empty(&raw.namespace) {
            return Err(
                "an empty component, unit or namespace matches nothing; remove the key or give a name"
                    .into(),
            );
        }
        if raw.component.is_none()
            && raw.unit.is_none()
            && raw.namespace.is_none()
            && raw.host.is_none()
        {
            return Err(
                "an allow entry needs at least one of `component`, `unit`, `namespace`, \
                 `host`; an entry matching everything would turn the policy off"
                    .into(),
            );
        }
        Ok(AllowRule {
            component: raw.component,
            unit: raw.unit,
            namespace: raw.namespace,
            host: raw.host,
            reason,
            link: raw.link,
            expires: raw.expires,
        })
    }
}

impl AllowRule {
    fn matches(&self, subject: &Subject) -> bool {
        let component = self
            .component
            .as_deref()
            .is_none_or(|c| c == subject.component);
        let unit = self.unit.as_deref().is_none_or(|wanted| {
            subject
                .unit
                .is_some_and(|unit| unit == wanted || unit.strip_suffix(".service") == Some(wanted))
        });
        let namespace = self
            .namespace
            .as_deref()
            .is_none_or(|wanted| subject.namespace == Some(wanted));
        let host = self
            .host
            .as_ref()
            .is_none_or(|pattern| subject.host.is_some_and(|h| pattern.matches_host(h)));
        component && unit && namespace && host
    }

    /// True once the whole expiry day (UTC) has passed.
    pub fn expired_at(&self, at: SystemTime) -> bool {
        self.expires.as_ref().is_some_and(|date| at >= date.end())
    }

    pub fn allowance(&self) -> Allowance {
        Allowance {
            reason: self.reason.clone(),
            link: self.link.clone(),
            expires: self.expires.as_ref().map(|d| d.text.clone()),
        }
    }
}

/// A calendar date, `YYYY-MM-DD`, in UTC. An entry expiring on a date
/// still allows during that whole day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Date {
    text: String,
    start: SystemTime,
}

impl Date {
    /// Only serde's visitor calls it, and wants a Display error: a String.
    pub fn parse(text: &str) -> Result<Date, String> {
        let text = text.trim();
        let shape_ok = text.len() == 10
            && text.char_indices().all(|(i, c)| match i {
                4 | 7 => c == '-',
                _ => c.is_ascii_digit(),
            });
        // humantime's RFC 3339 parser checks month lengths and leap years.
        let start = shape_ok
            .then(|| humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok())
            .flatten()
            .ok_or_else(|| format!("{text:?} is not a date; write YYYY-MM-DD, e.g. 2026-12-31"))?;
        Ok(Date {
            text: text.to_string(),
            start,
        })
    }

    /// The first instant after the date.
    fn end(&self) -> SystemTime {
        self.start + DAY
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        deserializer.deserialize_any(DateVisitor)
    }
}

struct DateVisitor;

impl<'de> serde::de::Visitor<'de> for DateVisitor {
    type Value = Date;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a date, YYYY-MM-DD")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Date, E> {
        Date::parse(text).map_err(E::custom)
    }

    /// TOML has a date type: `expires = 2026-12-31` arrives from the toml
    /// crate as a one-entry map holding the date's text.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Date, A::Error> {
        let Some((_, text)) = map.next_entry::<String, String>()? else {
            return Err(serde::de::Error::custom(
                "expected a date; write YYYY-MM-DD, e.g. 2026-12-31",
            ));
        };
        let date = Date::parse(&text).map_err(serde::de::Error::custom)?;
        // A TOML date-time (with a time of day) would have a different shape.
        Ok(date)
    }
}

/// What a decision is about: one attempt's own facts.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub phase: &'a str,
    pub component: &'a str,
    pub unit: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub host: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub fn of(attempt: &'a Attempt) -> Subject<'a> {
        Subject {
            phase: &attempt.phase,
            component: &attempt.component,
            unit: attempt.unit.as_deref(),
            namespace: attempt.pod.as_ref().and_then(|p| p.namespace.as_deref()),
            host: attempt.host.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Index of the allow entry that allowed the attempt.
    pub allowed_by: Option<usize>,
    /// Entries that matched but had expired: they no longer allow.
    pub expired: Vec<usize>,
}

impl Policy {
    pub fn decide(&self, subject: &Subject, at: SystemTime) -> Decision {
        if !self.enforce_phases.iter().any(|p| p == subject.phase) {
            return Decision {
                verdict: Verdict::NotEnforced,
                allowed_by: None,
                expired: Vec::new(),
            };
        }
        let mut allowed_by = None;
        let mut expired = Vec::new();
        for (index, rule) in self.allow.iter().enumerate() {
            if !rule.matches(subject) {
                continue;
            }
            if rule.expired_at(at) {
                expired.push(index);
            } else if allowed_by.is_none() {
                allowed_by = Some(index);
            }
        }
        Decision {
            verdict: if allowed_by.is_some() {
                Verdict::Allowed
            } else {
                Verdict::Violation
            },
            allowed_by,
            expired,
        }
    }

    /// Judges an attempt at its latest event: a merged attempt that went on
    /// after its entry expired is a violation.
    pub fn judge(&self, attempt: &mut Attempt) {
        let decision = self.decide(&Subject::of(attempt), attempt.last_seen);
        attempt.verdict = decision.verdict;
        attempt.allowed_by = decision.allowed_by.map(|i| self.allow[i].allowance());
    }
}

pub fn report(policy: &Policy, attempts: &[Attempt], now: SystemTime) -> PolicyReport {
    let mut allow: Vec<AllowReport> = policy
        .allow
        .iter()
        .map(|rule| AllowReport {
            component: rule.component.clone(),
            unit: rule.unit.clone(),
            namespace: rule.namespace.clone(),
            host: rule.host.as_ref().map(Pattern::to_string),
            reason: rule.reason.clone(),
            link: rule.link.clone(),
            expires: rule.expires.as_ref().map(|d| d.text.clone()),
            expired: rule.expired_at(now),
            allowed_attempts: 0,
            matched_after_expiry: 0,
        })
        .collect();
    for attempt in attempts {
        let decision = policy.decide(&Subject::of(attempt), attempt.last_seen);
        if let Some(index) = decision.allowed_by {
            allow[index].allowed_attempts += 1;
        }
        for index in decision.expired {
            allow[index].matched_after_expiry += 1;
        }
    }
    PolicyReport {
        enforce_phases: policy.enforce_phases.clone(),
        allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(component: Option<&str>, host: Option<&str>, expires: Option<&str>) -> AllowRule {
        AllowRule {
            component: component.map(String::from),
            unit: None,
            namespace: None,
            host: host.map(|h| Pattern::parse(h).unwrap()),
            reason: format!("because {component:?}"),
            link: Some("https://issues.example/1".into()),
            expires: expires.map(|d| Date::parse(d).unwrap()),
        }
    }

    fn subject<'a>(phase: &'a str, component: &'a str, host: &'a str) -> Subject<'a> {
        Subject {
            phase,
            component,
            unit: None,
            namespace: None,
            host: Some(host),
        }
    }

    fn day(date: &str, time: &str) -> SystemTime {
        humantime::parse_rfc3339(&format!("{date}T{time}Z")).unwrap()
    }

    #[test]
    fn by_default_every_boot_and_upgrade_contact_is_a_violation() {
        let policy = Policy::default();
        let now = SystemTime::now();
        for phase in ["boot", "upgrade"] {
            let d = policy.decide(&subject(phase, "skopeo", "quay.io"), now);
            assert_eq!(d.verdict, Verdict::Violation);
            assert_eq!(d.allowed_by, None);
        }
        let d = policy.decide(&subject("steady", "skopeo", "quay.io"), now);
        assert_eq!(d.verdict, Verdict::NotEnforced);
    }

    #[test]
    fn every_given_selector_must_match() {
        let policy = Policy {
            allow: vec![
                rule(Some("skopeo"), Some("*.quay.io"), None),
                AllowRule {
                    unit: Some("crio".into()),
                    namespace: Some("openshift-marketplace".into()),
                    ..rule(None, None, None)
                },
            ],
            ..Policy::default()
        };
        let now = SystemTime::now();
        let verdict = |s: Subject| policy.decide(&s, now);
        assert_eq!(
            verdict(subject("boot", "skopeo", "cdn01.quay.io")).allowed_by,
            Some(0)
        );
        // Wrong host, or wrong component: no.
        assert_eq!(
            verdict(subject("boot", "skopeo", "quay.io")).verdict,
            Verdict::Violation
        );
        assert_eq!(
            verdict(subject("boot", "podman", "cdn01.quay.io")).verdict,
            Verdict::Violation
        );
        // Unit (with or without .service) and namespace together.
        let mut s = subject("upgrade", "pod/x", "registry.redhat.io");
        s.unit = Some("crio.service");
        assert_eq!(verdict(s).verdict, Verdict::Violation, "namespace missing");
        s.namespace = Some("openshift-marketplace");
        assert_eq!(verdict(s).allowed_by, Some(1));
        s.namespace = Some("default");
        assert_eq!(verdict(s).verdict, Verdict::Violation);
        // A host-less attempt (CIDR match) only matches host-less entries.
        let mut s = subject("boot", "skopeo", "");
        s.host = None;
        assert_eq!(verdict(s).verdict, Verdict::Violation);
    }

    #[test]
    fn an_expired_entry_stops_allowing_after_its_day() {
        let mut policy = Policy {
            allow: vec![rule(Some("skopeo"), None, Some("2026-03-01"))],
            ..Policy::default()
        };
        let s = subject("boot", "skopeo", "quay.io");
        let during = policy.decide(&s, day("2026-03-01", "23:59:59"));
        assert_eq!(during.verdict, Verdict::Allowed);
        assert!(during.expired.is_empty());
        let after = policy.decide(&s, day("2026-03-02", "00:00:00"));
        assert_eq!(after.verdict, Verdict::Violation);
        assert_eq!(after.allowed_by, None);
        assert_eq!(after.expired, vec![0]);
        // A later, still valid entry allows; the expired one is still named.
        policy
            .allow
            .push(rule(Some("skopeo"), Some("quay.io"), Some("2027-01-01")));
        let both = policy.decide(&s, day("2026-06-01", "12:00:00"));
        assert_eq!(both.allowed_by, Some(1));
        assert_eq!(both.expired, vec![0]);
    }

    #[test]
    fn dates_are_strict() {
        assert!(Date::parse("2028-02-29").is_ok());
        for bad in [
            "2027-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026/01/01",
            "2026-01-01T00:00",
            "",
        ] {
            let err = Date::parse(bad).unwrap_err();
            assert!(err.contains("YYYY-MM-DD"), "{bad}: {err}");
        }
    }

    #[test]
    fn allow_entries_need_a_reason_and_a_selector() {
        let parse = |text: &str| serde_json::from_str::<AllowRule>(text).map_err(|e| e.to_string());
        assert!(parse(r#"{"component": "a", "reason": "r"}"#).is_ok());
        let err = parse(r#"{"component": "a"}"#).unwrap_err();
        assert!(err.contains("needs a `reason`"), "{err}");
        let err = parse(r#"{"reason": "r"}"#).unwrap_err();
        assert!(err.contains("at least one of"), "{err}");
        let err = parse(r#"{"unit": " ", "reason": "r"}"#).unwrap_err();
        assert!(err.contains("matches nothing"), "{err}");
        let err = parse(r#"{"component": "a", "reason": "r", "expires": "soon"}"#).unwrap_err();
        assert!(err.contains("YYYY-MM-DD"), "{err}");
        let err = parse(r#"{"component": "a", "reason": "r", "comment": "x"}"#).unwrap_err();
        assert!(err.contains("unknown field `comment`"), "{err}");
        let err = parse(r#"{"host": "quay.io:443", "reason": "r"}"#).unwrap_err();
        assert!(err.contains("without scheme, port or path"), "{err}");
    }
}
