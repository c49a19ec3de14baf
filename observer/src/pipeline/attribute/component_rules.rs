//! User rules that name components: "anything in namespace
//! openshift-machine-config-operator is `machine-config`". Pure; first
//! matching rule wins; every condition of a rule must hold.
//!
//! The same type is read from the command line
//! (`--component-rule 'namespace=openshift-machine-config-operator:machine-config'`)
//! and, through serde, from a configuration file:
//!
//! ```yaml
//! component_rules:
//!   - match: { namespace: openshift-machine-config-operator }
//!     component: machine-config
//!   - match: { unit: rpm-ostreed.service }
//!     component: machine-config
//!   - match: { namespace: openshift-marketplace, label: { olm.catalogSource: redhat-operators } }
//!     component: olm-catalog
//! ```

use std::{collections::BTreeMap, fmt};

use serde::Deserialize;

/// What a rule looks at: the facts attribution found for one attempt.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    pub namespace: Option<&'a str>,
    pub pod_name: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub unit: Option<&'a str>,
    pub exe: Option<&'a str>,
}

/// Checked as it is deserialized (see `TryFrom<RawComponentRule>`), so a
/// config file's mistake is reported at its line like any other.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawComponentRule")]
pub struct ComponentRule {
    pub matcher: RuleMatch,
    pub component: String,
}

/// The file form, before the checks `ComponentRule` guarantees.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponentRule {
    #[serde(rename = "match")]
    matcher: RuleMatch,
    component: String,
}

impl TryFrom<RawComponentRule> for ComponentRule {
    type Error = String;

    fn try_from(raw: RawComponentRule) -> Result<ComponentRule, String> {
        let component = raw.component.trim();
        if component.is_empty() {
            return Err(
                "a component rule needs a non-empty `component`; give the name to report".into(),
            );
        }
        let m = &raw.matcher;
        let empty_value = [&m.namespace, &m.pod_name_prefix, &m.unit, &m.exe]
            .into_iter()
            .any(|value| value.as_deref().is_some_and(|v| v.trim().is_empty()))
            || m.label.iter().any(|(key, _)| key.trim().is_empty());
        if empty_value {
            return Err(
                "an empty condition in `match` (or an empty label key) matches \
                 nothing; remove it or give a value"
                    .into(),
            );
        }
        let rule = ComponentRule {
            matcher: raw.matcher,
            component: component.to_string(),
        };
        if rule.validate().is_err() {
            return Err(
                "a component rule's `match` needs at least one of `namespace`, \
                 `pod_name_prefix`, `unit`, `exe` or `label`; a rule without one would \
                 name every process"
                    .into(),
            );
        }
        Ok(rule)
    }
}

/// Conditions, all of which must hold. At least one must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// The pod's namespace, exactly.
    pub namespace: Option<String>,
    /// The start of the pod's name (`version-` for the CVO's release pods).
    pub pod_name_prefix: Option<String>,
    /// The systemd unit, exactly (`rpm-ostreed.service`).
    pub unit: Option<String>,
    /// The executable: a full path matches exactly, a bare name matches the
    /// last path component (`skopeo` matches `/usr/bin/skopeo`).
    pub exe: Option<String>,
    /// Pod labels that must all be present with these values.
    #[serde(default)]
    pub label: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "component rule {0:?} has no `:COMPONENT` at the end; write e.g. 'namespace=openshift-machine-config-operator:machine-config'"
    )]
    NoComponent(String),
    #[error(
        "component rule {0:?} has no condition; give at least one of namespace=, pod_name_prefix=, unit=, exe=, label.KEY="
    )]
    NoCondition(String),
    #[error(
        "component rule {rule:?}: unknown condition {key:?}; use namespace=, pod_name_prefix=, unit=, exe= or label.KEY=VALUE, separated by commas"
    )]
    UnknownKey { rule: String, key: String },
    #[error("component rule {rule:?}: condition {condition:?} needs a value after `=`")]
    NoValue { rule: String, condition: String },
}

impl ComponentRule {
    /// Parses `COND[,COND...]:COMPONENT`, where COND is `namespace=NS`,
    /// `pod_name_prefix=P`, `unit=U`, `exe=E` or `label.KEY=VALUE`.
    pub fn parse(text: &str) -> Result<ComponentRule, RuleError> {
        let (conditions, component) = text
            .rsplit_once(':')
            .filter(|(_, component)| !component.trim().is_empty())
            .ok_or_else(|| RuleError::NoComponent(text.to_string()))?;
        let mut matcher = RuleMatch::default();
        for condition in conditions.split(',').filter(|c| !c.trim().is_empty()) {
            let (key, value) = condition
                .split_once('=')
                .filter(|(_, value)| !value.is_empty())
                .ok_or_else(|| RuleError::NoValue {
                    rule: text.to_string(),
                    condition: condition.to_string(),
                })?;
            let value = value.to_string();
            match key.trim() {
                "namespace" => matcher.namespace = Some(value),
                "pod_name_prefix" | "pod-name-prefix" => matcher.pod_name_prefix = Some(value),
                "unit" => matcher.unit = Some(value),
                "exe" => matcher.exe = Some(value),
                other => match other.strip_prefix("label.") {
                    Some(label) if !label.is_empty() => {
                        matcher.label.insert(label.to_string(), value);
                    }
                    _ => {
                        return Err(RuleError::UnknownKey {
                            rule: text.to_string(),
                            key: other.to_string(),
                        });
                    }
                },
            }
        }
        let rule = ComponentRule {
            matcher,
            component: component.trim().to_string(),
        };
        rule.validate()
            .map_err(|_| RuleError::NoCondition(text.to_string()))?;
        Ok(rule)
    }

    /// A rule without conditions would match everything: almost certainly a
    /// mistake in a configuration file, so it is refused.
    pub fn validate(&self) -> Result<(), RuleError> {
        let m = &self.matcher;
        let empty = m.namespace.is_none()
            && m.pod_name_prefix.is_none()
            && m.unit.is_none()
            && m.exe.is_none()
            && m.label.is_empty();
        if empty {
            return Err(RuleError::NoCondition(self.to_string()));
        }
        Ok(())
    }

    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let m = &self.matcher;
        let equal = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|want| have == Some(want))
        };
        let exe_matches = m.exe.as_deref().is_none_or(|want| {
            subject.exe.is_some_and(|exe| {
                let exe = exe.trim_end_matches(" (deleted)");
                if want.contains('/') {
                    exe == want
                } else {
                    exe.rsplit('/').next() == Some(want)
                }
            })
        });
        let prefix_matches = m.pod_name_prefix.as_deref().is_none_or(|prefix| {
            subject
                .pod_name
                .is_some_and(|name| name.starts_with(prefix))
        });
        let labels_match = m.label.iter().all(|(key, value)| {
            subject
                .labels
                .and_then(|labels| labels.get(key))
                .is_some_and(|have| have == value)
        });
        equal(&m.namespace, subject.namespace)
            && equal(&m.unit, subject.unit)
            && exe_matches
            && prefix_matches
            && labels_match
    }
}

/// The command-line form, for messages.
impl fmt::Display for ComponentRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.matcher;
        let mut conditions = Vec::new();
        for (key, value) in [
            ("namespace", &m.namespace),
            ("pod_name_prefix", &m.pod_name_prefix),
            ("unit", &m.unit),
            ("exe", &m.exe),
        ] {
            if let Some(value) = value {
                conditions.push(format!("{key}={value}"));
            }
        }
        for (key, value) in &m.label {
            conditions.push(format!("label.{key}={value}"));
        }
        write!(f, "{}:{}", conditions.join(","), self.component)
    }
}

/// The first rule that matches names the component.
pub fn first_match<'r>(rules: &'r [ComponentRule], subject: &Subject<'_>) -> Option<&'r str> {
    rules
        .iter()
        .find(|rule| rule.matches(subject))
        .map(|rule| rule.component.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_command_line_form() {
        let rule =
            ComponentRule::parse("namespace=openshift-machine-config-operator:machine-config")
                .unwrap();
        assert_eq!(
            rule.matcher.namespace.as_deref(),
            Some("openshift-machine-config-operator")
        );
        assert_eq!(rule.component, "machine-config");
        let rule = ComponentRule::parse(
            "namespace=openshift-marketplace,label.olm.catalogSource=redhat-operators,pod_name_prefix=redhat-:olm-catalog",
        )
        .unwrap();
        assert_eq!(rule.matcher.label["olm.catalogSource"], "redhat-operators");
        assert_eq!(rule.matcher.pod_name_prefix.as_deref(), Some("redhat-"));
        assert_eq!(
            rule.to_string(),
            "namespace=openshift-marketplace,pod_name_prefix=redhat-,label.olm.catalogSource=redhat-operators:olm-catalog"
        );
        assert_eq!(
            ComponentRule::parse("unit=rpm-ostreed.service:machine-config")
                .unwrap()
                .matcher
                .unit
                .as_deref(),
            Some("rpm-ostreed.service")
        );
    }

    #[test]
    fn rejects_bad_rules_with_a_reason() {
        for (text, needle) in [
            ("namespace=x", "no `:COMPONENT`"),
            ("namespace=x:", "no `:COMPONENT`"),
            (":x", "no condition"),
            ("namespace=:x", "needs a value"),
            ("namespace:x", "needs a value"),
            ("pod=x:y", "unknown condition \"pod\""),
            ("label.=v:y", "unknown condition \"label.\""),
        ] {
            let error = ComponentRule::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn deserializes_the_documented_yaml_shape_as_json() {
        let rules: Vec<ComponentRule> = serde_json::from_value(serde_json::json!([
            {"match": {"namespace": "openshift-machine-config-operator"}, "component": "machine-config"},
            {"match": {"exe": "skopeo", "label": {"app": "x"}}, "component": "y"}
        ]))
        .unwrap();
        assert_eq!(rules[1].matcher.label["app"], "x");
        assert!(rules.iter().all(|r| r.validate().is_ok()));
        let typo = serde_json::from_value::<ComponentRule>(serde_json::json!(
            {"match": {"namespaces": "x"}, "component": "y"}
        ));
        assert!(typo.unwrap_err().to_string().contains("namespaces"));
        // Checked while deserializing, so files cannot hold a rule the
        // command line would refuse.
        for (bad, needle) in [
            (
                serde_json::json!({"match": {}, "component": "y"}),
                "at least one of",
            ),
            (
                serde_json::json!({"match": {"unit": "crio.service"}, "component": " "}),
                "non-empty `component`",
            ),
            (
                serde_json::json!({"match": {"namespace": ""}, "component": "y"}),
                "empty condition",
            ),
            (
                serde_json::json!({"match": {"label": {"": "v"}}, "component": "y"}),
                "empty label key",
            ),
            (serde_json::json!({"match": {"exe": "skopeo"}}), "component"),
        ] {
            let error = serde_json::from_value::<ComponentRule>(bad.clone())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{bad}: {error}");
        }
    }

    #[test]
    fn first_match_wins_and_all_conditions_must_hold() {
        let rules = [
            ComponentRule::parse("namespace=ns,label.app=a:first").unwrap(),
            ComponentRule::parse("namespace=ns:second").unwrap(),
            ComponentRule::parse("exe=skopeo:skopeo-anywhere").unwrap(),
            ComponentRule::parse("exe=/usr/local/bin/tool:tool").unwrap(),
            ComponentRule::parse("unit=rpm-ostreed.service:machine-config").unwrap(),
            ComponentRule::parse("pod_name_prefix=version-:cluster-version").unwrap(),
        ];
        let app_a = labels(&[("app", "a")]);
        let app_b = labels(&[("app", "b")]);
        let pod = |labels| Subject {
            namespace: Some("ns"),
            pod_name: Some("p"),
            labels: Some(labels),
            ..Subject::default()
        };
        assert_eq!(first_match(&rules, &pod(&app_a)), Some("first"));
        assert_eq!(first_match(&rules, &pod(&app_b)), Some("second"));
        let exe = |exe| Subject {
            exe: Some(exe),
            ..Subject::default()
        };
        assert_eq!(
            first_match(&rules, &exe("/usr/bin/skopeo (deleted)")),
            Some("skopeo-anywhere")
        );
        assert_eq!(
            first_match(&rules, &exe("/usr/local/bin/tool")),
            Some("tool")
        );
        assert_eq!(first_match(&rules, &exe("/usr/bin/tool")), None);
        let unit = Subject {
            unit: Some("rpm-ostreed.service"),
            ..Subject::default()
        };
        assert_eq!(first_match(&rules, &unit), Some("machine-config"));
        let version = Subject {
            pod_name: Some("version-4.16.3-x8d7f"),
            ..Subject::default()
        };
        assert_eq!(first_match(&rules, &version), Some("cluster-version"));
        // Unknown facts never match a condition on them.
        assert_eq!(first_match(&rules, &Subject::default()), None);
    }
}
