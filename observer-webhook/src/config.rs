//! What the webhook decides with: the mode, the lowest severity that denies,
//! and which namespaces it judges. Pure: parsed from flags, no I/O.

use std::fmt;

use observer_lint::FailLevel;

/// What a finding does to the admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Allow every request; findings come back as admission warnings (kubectl
    /// prints them).
    Warn,
    /// Reject requests with findings at or above --fail-level (HTTP 403 in
    /// the AdmissionReview); lower findings come back as warnings.
    Deny,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Warn => "warn",
            Mode::Deny => "deny",
        }
    }
}

/// `--fail-level` for the webhook: lint's levels without `none`, which in a
/// webhook is what `--mode warn` already says.
pub fn parse_fail_level(text: &str) -> Result<FailLevel, String> {
    match text {
        "error" => Ok(FailLevel::Error),
        "warning" => Ok(FailLevel::Warning),
        "none" => Err("`none` would never deny: use --mode warn instead".to_owned()),
        _ => Err("write error or warning".to_owned()),
    }
}

/// A namespace name, or a prefix followed by `*` (`openshift-*`); `*` alone
/// matches every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern {
    text: String,
}

impl NamespacePattern {
    /// Namespace names are DNS-1123 labels: lower-case letters, digits and
    /// `-`, at most 63 characters. A pattern that could never match one is a
    /// typo the user should hear about now, not a silent no-op.
    pub fn parse(text: &str) -> Result<NamespacePattern, String> {
        let stem = text.strip_suffix('*').unwrap_or(text);
        if text.is_empty() {
            return Err("empty namespace pattern".to_owned());
        }
        if stem.contains('*') {
            return Err(format!(
                "{text:?}: `*` is allowed only at the end, as a prefix match (openshift-*)"
            ));
        }
        if stem.len() > 63 {
            return Err(format!(
                "{text:?} is longer than a namespace name can be (63 characters)"
            ));
        }
        if let Some(bad) = stem
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "{text:?} contains {bad:?}: namespace names have only a-z, 0-9 and -"
            ));
        }
        Ok(NamespacePattern {
            text: text.to_owned(),
        })
    }

    pub fn matches(&self, namespace: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => namespace.starts_with(prefix),
            None => namespace == self.text,
        }
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which namespaces are judged: those an include pattern matches (all, when
/// there is none) and no exclude pattern matches. Exclude wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceSelection {
    pub include: Vec<NamespacePattern>,
    pub exclude: Vec<NamespacePattern>,
}

/// Why a namespace is not judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    Excluded(NamespacePattern),
    NotIncluded,
}

impl NamespaceSelection {
    /// `namespace` is `None` for cluster-scoped objects, which no workload
    /// kind is; they are judged only when there is no include list.
    pub fn judge(&self, namespace: Option<&str>) -> Result<(), Skipped> {
        let name = namespace.unwrap_or("");
        if let Some(pattern) = self.exclude.iter().find(|p| p.matches(name)) {
            return Err(Skipped::Excluded(pattern.clone()));
        }
        if self.include.is_empty() || self.include.iter().any(|p| p.matches(name)) {
            Ok(())
        } else {
            Err(Skipped::NotIncluded)
        }
    }
}

impl fmt::Display for NamespaceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |patterns: &[NamespacePattern]| {
            patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.include.is_empty() {
            f.write_str("all")?;
        } else {
            f.write_str(&join(&self.include))?;
        }
        if !self.exclude.is_empty() {
            write!(f, " except {}", join(&self.exclude))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(include: &[&str], exclude: &[&str]) -> NamespaceSelection {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|p| NamespacePattern::parse(p).unwrap())
                .collect()
        };
        NamespaceSelection {
            include: parse(include),
            exclude: parse(exclude),
        }
    }

    #[test]
    fn exact_names_and_prefix_globs() {
        let exact = NamespacePattern::parse("kube-system").unwrap();
        assert!(exact.matches("kube-system"));
        assert!(!exact.matches("kube-system-2"));
        assert!(!exact.matches("kube"));
        let prefix = NamespacePattern::parse("openshift-*").unwrap();
        assert!(prefix.matches("openshift-"));
        assert!(prefix.matches("openshift-etcd"));
        assert!(!prefix.matches("openshift"));
        let all = NamespacePattern::parse("*").unwrap();
        assert!(all.matches("anything") && all.matches(""));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (text, reason) in [
            ("", "empty"),
            ("open*shift", "only at the end"),
            ("Kube-System", "'K'"),
            ("a_b", "'_'"),
            (&"a".repeat(64) as &str, "63"),
        ] {
            let error = NamespacePattern::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn exclude_wins_and_no_include_means_all() {
        let all = selection(&[], &[]);
        assert_eq!(all.judge(Some("shop")), Ok(()));
        assert_eq!(all.judge(None), Ok(()));
        assert_eq!(all.to_string(), "all");

        let some = selection(&["shop", "team-*"], &["team-infra", "kube-*"]);
        assert_eq!(some.judge(Some("shop")), Ok(()));
        assert_eq!(some.judge(Some("team-web")), Ok(()));
        assert_eq!(some.judge(Some("other")), Err(Skipped::NotIncluded));
        assert_eq!(some.judge(None), Err(Skipped::NotIncluded));
        let Err(Skipped::Excluded(by)) = some.judge(Some("team-infra")) else {
            panic!("team-infra is excluded")
        };
        assert_eq!(by.to_string(), "team-infra");
        // Included by name, excluded by pattern: exclude wins.
        let both = selection(&["kube-system"], &["kube-*"]);
        assert!(matches!(
            both.judge(Some("kube-system")),
            Err(Skipped::Excluded(_))
        ));
        assert_eq!(some.to_string(), "shop, team-* except team-infra, kube-*");
    }

    #[test]
    fn fail_level_is_error_or_warning() {
        assert_eq!(parse_fail_level("error"), Ok(FailLevel::Error));
        assert_eq!(parse_fail_level("warning"), Ok(FailLevel::Warning));
        assert!(
            parse_fail_level("none")
                .unwrap_err()
                .contains("--mode warn")
        );
        assert!(parse_fail_level("Error").is_err());
    }
}
