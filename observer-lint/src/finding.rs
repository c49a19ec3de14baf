//! What a check reports: rules, severities, and where in an object a finding
//! points.

use std::fmt;

use serde::Serialize;

/// How bad a finding is. Ordered: `Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works offline only while the image is already on the node, or the
    /// runtime's configuration decides where it is pulled from.
    Warning,
    /// A registry is contacted on every container start (or the container
    /// never starts).
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// Every rule `lint` checks, in the order they are documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    ExplicitAlways,
    ImplicitAlways,
    InvalidImage,
    InvalidPullPolicy,
    TagNotDigest,
    ShortName,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::ExplicitAlways,
        Rule::ImplicitAlways,
        Rule::InvalidImage,
        Rule::InvalidPullPolicy,
        Rule::TagNotDigest,
        Rule::ShortName,
    ];

    /// The stable id used in every output format.
    pub fn id(self) -> &'static str {
        match self {
            Rule::ExplicitAlways => "explicit-always",
            Rule::ImplicitAlways => "implicit-always",
            Rule::InvalidImage => "invalid-image",
            Rule::InvalidPullPolicy => "invalid-pull-policy",
            Rule::TagNotDigest => "tag-not-digest",
            Rule::ShortName => "short-name",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::ExplicitAlways
            | Rule::ImplicitAlways
            | Rule::InvalidImage
            | Rule::InvalidPullPolicy => Severity::Error,
            Rule::TagNotDigest | Rule::ShortName => Severity::Warning,
        }
    }

    /// One line: what the rule finds.
    pub fn summary(self) -> &'static str {
        match self {
            Rule::ExplicitAlways => {
                "imagePullPolicy: Always contacts the registry on every container start"
            }
            Rule::ImplicitAlways => {
                "no imagePullPolicy and a latest or missing tag: Kubernetes defaults it to Always"
            }
            Rule::InvalidImage => {
                "the image reference does not parse: the kubelet reports InvalidImageName"
            }
            Rule::InvalidPullPolicy => "imagePullPolicy is not Always, IfNotPresent or Never",
            Rule::TagNotDigest => "the image is pinned by tag, not by digest",
            Rule::ShortName => "the image name has no registry: the container runtime picks one",
        }
    }

    /// Why it matters for a node that must boot and upgrade with no
    /// registry reachable.
    pub fn rationale(self) -> &'static str {
        match self {
            Rule::ExplicitAlways | Rule::ImplicitAlways => {
                "With Always the kubelet asks the runtime to pull before every start, and CRI-O \
                 contacts the registry even when the image (digest included) is already on the \
                 node; with no registry reachable the container fails with ErrImagePull. \
                 Security scanners (checkov CKV_K8S_15, Polaris, CIS AlwaysPullImages) recommend \
                 Always to re-check pull credentials; that conflicts with offline boot and upgrade."
            }
            Rule::InvalidImage => {
                "The kubelet rejects the reference before pulling; the container never starts."
            }
            Rule::InvalidPullPolicy => {
                "The API server rejects the object; values are case-sensitive."
            }
            Rule::TagNotDigest => {
                "With IfNotPresent a tagged image works offline only while that tag is present \
                 on the node; mirrors configured with mirror-by-digest-only \
                 (ImageDigestMirrorSet) never serve tags, and a tag can move between nodes."
            }
            Rule::ShortName => {
                "CRI-O resolves short names through unqualified-search-registries in \
                 registries.conf (possibly trying several registries, or failing as ambiguous \
                 in enforcing mode); containerd always uses docker.io."
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One step in a path into a JSON/YAML object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into an object, printed as a JSON Pointer (RFC 6901), e.g.
/// `/spec/template/spec/containers/0/image`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonPath(pub Vec<Segment>);

impl JsonPath {
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            match segment {
                Segment::Key(key) => write!(f, "/{}", key.replace('~', "~0").replace('/', "~1"))?,
                Segment::Index(i) => write!(f, "/{i}")?,
            }
        }
        Ok(())
    }
}

impl Serialize for JsonPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The object a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name`, or `generateName` followed by `*`.
    pub name: String,
    /// The controller that owns it (`DaemonSet/ovnkube-node`), for live pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if let Some(namespace) = &self.namespace {
            write!(f, "{namespace}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(owner) = &self.owner {
            write!(f, " (owned by {owner})")?;
        }
        Ok(())
    }
}

/// Which container list of a pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ContainerList {
    #[serde(rename = "containers")]
    Containers,
    #[serde(rename = "initContainers")]
    InitContainers,
    #[serde(rename = "ephemeralContainers")]
    EphemeralContainers,
}

impl ContainerList {
    pub const ALL: [ContainerList; 3] = [
        ContainerList::InitContainers,
        ContainerList::Containers,
        ContainerList::EphemeralContainers,
    ];

    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
            ContainerList::EphemeralContainers => "ephemeralContainers",
        }
    }
}

/// A container in a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub list: ContainerList,
    /// `name`, or `#<index>` when the container has none.
    pub name: String,
    pub image: String,
    /// The container's own path, e.g. `/spec/containers/1`.
    pub path: JsonPath,
}

/// A rule that fired on one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "serialize_rule")]
    pub rule: Rule,
    pub severity: Severity,
    pub workload: Workload,
    pub container: Container,
    /// The field the finding is about (`.../imagePullPolicy` or `.../image`).
    pub path: JsonPath,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to change.
    pub fix: String,
}

fn serialize_rule<S: serde::Serializer>(rule: &Rule, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(rule.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_json_pointers() {
        let path = JsonPath::default()
            .key("spec")
            .key("a/b~c")
            .index(3)
            .key("image");
        assert_eq!(path.to_string(), "/spec/a~1b~0c/3/image");
        assert_eq!(JsonPath::default().to_string(), "");
    }

    #[test]
    fn rules_have_unique_ids_and_ordered_severities() {
        let mut ids: Vec<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
        assert!(Severity::Warning < Severity::Error);
        assert_eq!(Rule::ImplicitAlways.severity(), Severity::Error);
        assert_eq!(Rule::ShortName.severity(), Severity::Warning);
    }
}
