//! Kubernetes image pull-policy defaulting and the rules for one container.
//!
//! The defaulting rule is `SetDefaults_Container` in Kubernetes'
//! `pkg/apis/core/v1/defaults.go` (shared/DOMAIN.md, "Kubernetes pull-policy
//! defaulting"): when `imagePullPolicy` is empty it becomes `Always` if the
//! tag from `ParseImageName` is `latest` (a reference with neither tag nor
//! digest parses as `latest`), otherwise `IfNotPresent`. A reference that
//! does not parse gets `IfNotPresent` there, and the kubelet later refuses it.

use super::{
    finding::{Container, Finding, Rule, Workload},
    reference::ImageReference,
};

/// The three values the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Parses a written value; the API is case-sensitive.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// The policy Kubernetes stores when `imagePullPolicy` is empty.
pub fn default_pull_policy(image: &str) -> PullPolicy {
    match ImageReference::parse(image) {
        Ok(reference) if reference.defaulting_tag() == Some("latest") => PullPolicy::Always,
        _ => PullPolicy::IfNotPresent,
    }
}

/// Checks one container: `written_policy` is its `imagePullPolicy` field,
/// `None` when absent or empty (which the API treats alike).
pub fn check_container(
    workload: &Workload,
    container: &Container,
    written_policy: Option<&str>,
) -> Vec<Finding> {
    let image = container.image.as_str();
    let finding = |rule: Rule, field: &str, message: String, fix: String| Finding {
        rule,
        severity: rule.severity(),
        workload: workload.clone(),
        container: container.clone(),
        path: container.path.key(field),
        message,
        fix,
    };
    let mut findings = Vec::new();
    // An OpenShift Template parameter (`${IMAGE}`) is filled in when the
    // template is processed: only a written policy can be judged now.
    let is_parameter = image.contains("${");
    let parsed = (!is_parameter).then(|| ImageReference::parse(image));
    let reference = match parsed {
        None => None,
        Some(Ok(reference)) => Some(reference),
        Some(Err(error)) => {
            findings.push(finding(
                Rule::InvalidImage,
                "image",
                format!("image {image:?} does not parse: {error}"),
                "write a valid reference such as quay.io/team/app@sha256:<digest>".to_owned(),
            ));
            None
        }
    };

    let policy = match written_policy {
        Some(text) => match PullPolicy::parse(text) {
            Some(policy) => Some(policy),
            None => {
                findings.push(finding(
                    Rule::InvalidPullPolicy,
                    "imagePullPolicy",
                    format!("imagePullPolicy {text:?} is not Always, IfNotPresent or Never"),
                    "write IfNotPresent (values are case-sensitive)".to_owned(),
                ));
                None
            }
        },
        None if is_parameter => None,
        None => Some(default_pull_policy(image)),
    };

    match (policy, written_policy) {
        (Some(PullPolicy::Always), Some(_)) => findings.push(finding(
            Rule::ExplicitAlways,
            "imagePullPolicy",
            format!(
                "imagePullPolicy: Always for image {image:?}: every container start contacts the registry"
            ),
            match reference.as_ref().and_then(|r| r.digest.as_ref()) {
                Some(_) => "set imagePullPolicy: IfNotPresent (the digest already pins the image)",
                None => "set imagePullPolicy: IfNotPresent and pin the image by digest",
            }
            .to_owned(),
        )),
        (Some(PullPolicy::Always), None) => {
            let why = match reference.as_ref().and_then(|r| r.tag.as_deref()) {
                Some(_) => "the tag is latest",
                None => "it has no tag and no digest",
            };
            findings.push(finding(
                Rule::ImplicitAlways,
                "image",
                format!(
                    "image {image:?} has no imagePullPolicy and {why}, so Kubernetes defaults \
                     imagePullPolicy to Always: every container start contacts the registry"
                ),
                match reference.as_ref().and_then(|r| r.digest.as_ref()) {
                    Some(_) => "set imagePullPolicy: IfNotPresent, or drop the :latest tag \
                                (a digest alone defaults to IfNotPresent)",
                    None => "set imagePullPolicy: IfNotPresent and pin the image by digest \
                             (image@sha256:<digest>)",
                }
                .to_owned(),
            ))
        }
        _ => {}
    }

    // With Never nothing is ever pulled: how the image is named cannot make
    // the node contact a registry.
    let Some(reference) = reference else {
        return findings;
    };
    if policy == Some(PullPolicy::Never) {
        return findings;
    }
    if reference.digest.is_none() {
        let qualified = reference.fully_qualified();
        findings.push(finding(
            Rule::TagNotDigest,
            "image",
            format!(
                "image {image:?} is not pinned by digest: it works offline only while this tag \
                 is present on the node, and digest-only mirrors never serve it"
            ),
            format!(
                "pin the digest: {}@sha256:<digest> (skopeo inspect --format '{{{{.Digest}}}}' docker://{qualified})",
                ImageReference {
                    tag: None,
                    ..qualified.clone()
                }
            ),
        ));
    }
    if reference.is_short_name() {
        findings.push(finding(
            Rule::ShortName,
            "image",
            format!(
                "image {image:?} names no registry: CRI-O tries unqualified-search-registries, \
                 containerd uses docker.io"
            ),
            format!(
                "write the fully qualified name: {}",
                reference.fully_qualified()
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{ContainerList, JsonPath};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// The table from shared/DOMAIN.md, plus the edge cases around it.
    #[test]
    fn defaults_like_kubernetes() {
        use PullPolicy::*;
        let table = [
            ("img", Always),
            ("img:latest", Always),
            ("host:5000/img", Always),
            ("quay.io/team/img", Always),
            (&format!("img:latest@{DIGEST}") as &str, Always),
            (&format!("img@{DIGEST}"), IfNotPresent),
            ("img:v1", IfNotPresent),
            ("host:5000/img:v1", IfNotPresent),
            // The tag comparison is exact.
            ("img:Latest", IfNotPresent),
            (&format!("img:v1@{DIGEST}"), IfNotPresent),
            // ParseImageName fails, the tag is empty: IfNotPresent.
            ("Img", IfNotPresent),
            ("img@sha256:short", IfNotPresent),
        ];
        for (image, expected) in table {
            assert_eq!(default_pull_policy(image), expected, "{image}");
        }
    }

    fn rules(image: &str, policy: Option<&str>) -> Vec<Rule> {
        let workload = Workload {
            kind: "Pod".into(),
            namespace: Some("ns".into()),
            name: "p".into(),
            owner: None,
        };
        let container = Container {
            list: ContainerList::Containers,
            name: "c".into(),
            image: image.into(),
            path: JsonPath::default().key("spec").key("containers").index(0),
        };
        check_container(&workload, &container, policy)
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn fires_the_right_rules() {
        use Rule::*;
        let pinned = format!("quay.io/team/img@{DIGEST}");
        assert_eq!(rules(&pinned, None), vec![]);
        assert_eq!(rules(&pinned, Some("IfNotPresent")), vec![]);
        assert_eq!(rules(&pinned, Some("Always")), vec![ExplicitAlways]);
        assert_eq!(
            rules("quay.io/team/img", None),
            vec![ImplicitAlways, TagNotDigest]
        );
        assert_eq!(
            rules(&format!("quay.io/team/img:latest@{DIGEST}"), None),
            vec![ImplicitAlways]
        );
        assert_eq!(rules("quay.io/team/img:v1", None), vec![TagNotDigest]);
        assert_eq!(
            rules("nginx", None),
            vec![ImplicitAlways, TagNotDigest, ShortName]
        );
        assert_eq!(rules("nginx", Some("Never")), vec![]);
        assert_eq!(
            rules("quay.io/team/img:v1", Some("always")),
            vec![InvalidPullPolicy, TagNotDigest]
        );
        assert_eq!(rules("", None), vec![InvalidImage]);
        // Template parameters are judged by their written policy only.
        assert_eq!(rules("${IMAGE}", None), vec![]);
        assert_eq!(rules("${IMAGE}", Some("IfNotPresent")), vec![]);
        assert_eq!(rules("${IMAGE}", Some("Always")), vec![ExplicitAlways]);
        assert_eq!(
            rules("${IMAGE}", Some("Sometimes")),
            vec![InvalidPullPolicy]
        );
        assert_eq!(
            rules("Nginx", Some("Always")),
            vec![InvalidImage, ExplicitAlways]
        );
    }

    #[test]
    fn messages_name_the_image_and_the_fix() {
        let workload = Workload {
            kind: "Pod".into(),
            namespace: None,
            name: "p".into(),
            owner: None,
        };
        let container = Container {
            list: ContainerList::InitContainers,
            name: "setup".into(),
            image: "nginx:1.25".into(),
            path: JsonPath::default()
                .key("spec")
                .key("initContainers")
                .index(0),
        };
        let findings = check_container(&workload, &container, Some("IfNotPresent"));
        let short = findings.iter().find(|f| f.rule == Rule::ShortName).unwrap();
        assert_eq!(
            short.fix,
            "write the fully qualified name: docker.io/library/nginx:1.25"
        );
        assert_eq!(short.path.to_string(), "/spec/initContainers/0/image");
        let pinned = Container {
            image: format!("quay.io/t/a:latest@{DIGEST}"),
            ..container.clone()
        };
        let implicit = check_container(&workload, &pinned, None);
        assert_eq!(implicit[0].rule, Rule::ImplicitAlways);
        assert!(
            implicit[0].fix.contains("drop the :latest tag"),
            "{}",
            implicit[0].fix
        );
        assert!(implicit[0].message.contains("the tag is latest"));
        let explicit = check_container(&workload, &pinned, Some("Always"));
        assert!(
            explicit[0].fix.contains("the digest already pins"),
            "{}",
            explicit[0].fix
        );
        let digest = findings
            .iter()
            .find(|f| f.rule == Rule::TagNotDigest)
            .unwrap();
        assert!(
            digest
                .fix
                .starts_with("pin the digest: docker.io/library/nginx@sha256:<digest> (skopeo inspect --format '{{.Digest}}' docker://docker.io/library/nginx:1.25)"),
            "{}",
            digest.fix
        );
    }
}
