//! Image references as the kubelet reads them.
//!
//! Follows the grammar of the distribution reference library that the kubelet
//! uses (`ParseNormalizedNamed` in github.com/distribution/reference, called
//! from `pkg/util/parsers.ParseImageName` in Kubernetes):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]        (only when the first component holds
//!                                         "." or ":", is "localhost", or has
//!                                         upper case; otherwise docker.io)
//! path-comp. := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex        (sha256: 64, sha384: 96, sha512: 128
//!                                         lower-case hex digits)
//! ```
//!
//! No crate on crates.io keeps what this module needs: whether the tag, digest
//! and registry were *written* (the defaulting rule and the short-name check
//! depend on it), and the kubelet's exact rejections. See Cargo.toml.

use std::fmt;

/// The registry a reference without one resolves to on containerd and in
/// Kubernetes' own normalization.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest name (registry and path) the reference library accepts.
const NAME_MAX_LEN: usize = 255;
const TAG_MAX_LEN: usize = 128;

/// A parsed image reference, remembering what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// The registry host (and port) as written, `None` for a short name.
    pub registry: Option<String>,
    /// The repository path as written (`nginx`, `openshift/origin-cli`).
    pub path: String,
    /// The tag as written, without the colon.
    pub tag: Option<String>,
    /// The digest as written (`sha256:...`).
    pub digest: Option<String>,
}

/// Why a reference does not parse; the kubelet reports these images as
/// `InvalidImageName` and never starts the container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image is empty")]
    Empty,
    #[error("the name must be lower case (only a registry host may have upper case)")]
    UpperCase,
    #[error("{0:?} is not a valid registry host[:port]")]
    BadRegistry(String),
    #[error(
        "the repository path {0:?} is not valid: components are lower-case letters and digits joined by '.', '_', '__' or '-'"
    )]
    BadPath(String),
    #[error(
        "the tag {0:?} is not valid: at most 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    )]
    BadTag(String),
    #[error("the digest {0:?} is not valid: write sha256: followed by 64 lower-case hex digits")]
    BadDigest(String),
    #[error("the name is longer than 255 characters")]
    TooLong,
    #[error("a 64-hex-digit name is an image id, not a reference")]
    ImageId,
}

impl ImageReference {
    /// Parses `text` exactly as the kubelet does (see the module docs).
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::ImageId);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (text, None),
        };
        // A colon after the last slash starts the tag; one before it belongs
        // to a registry port (`host:5000/img`).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let colon = last_slash + i;
                (&rest[..colon], Some(parse_tag(&rest[colon + 1..])?))
            }
            None => (rest, None),
        };
        if name.len() > NAME_MAX_LEN {
            return Err(ReferenceError::TooLong);
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = registry
            && !is_valid_registry(registry)
        {
            return Err(ReferenceError::BadRegistry(registry.to_owned()));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::UpperCase);
        }
        if path.is_empty() || !path.split('/').all(is_valid_path_component) {
            return Err(ReferenceError::BadPath(path.to_owned()));
        }
        Ok(Self {
            registry: registry.map(str::to_owned),
            path: path.to_owned(),
            tag,
            digest,
        })
    }

    /// The tag the kubelet uses to decide the default pull policy: the
    /// written tag, or `latest` when neither tag nor digest was written.
    pub fn defaulting_tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// Whether the registry is left to the container runtime to choose.
    pub fn is_short_name(&self) -> bool {
        self.registry.is_none()
    }

    /// The fully qualified form containerd and Kubernetes normalize a short
    /// name to (`nginx` -> `docker.io/library/nginx`).
    pub fn fully_qualified(&self) -> Self {
        let mut qualified = self.clone();
        if self.registry.is_none() {
            qualified.registry = Some(DOCKER_HUB.to_owned());
            if !self.path.contains('/') {
                qualified.path = format!("library/{}", self.path);
            }
        }
        qualified
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The reference library's `splitDockerDomain`: the first component is a
/// registry only when it looks like a host.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= TAG_MAX_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(tag.to_owned())
    } else {
        Err(ReferenceError::BadTag(tag.to_owned()))
    }
}

fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    let bad = || ReferenceError::BadDigest(digest.to_owned());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    // go-digest knows these three; any other algorithm fails to parse.
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hex.len() == hex_len && hex.bytes().all(lower_hex) {
        Ok(digest.to_owned())
    } else {
        Err(bad())
    }
}

fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(bracketed) = registry.strip_prefix('[') {
        // An IPv6 literal: `[::1]:5000`.
        let Some((address, after)) = bracketed.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(text: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let r = ImageReference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (r.registry, r.path, r.tag, r.digest)
    }

    #[test]
    fn splits_registry_path_tag_and_digest() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(parts("nginx"), (None, "nginx".into(), None, None));
        assert_eq!(parts("nginx:1.25"), (None, "nginx".into(), s("1.25"), None));
        assert_eq!(
            parts("host:5000/img"),
            (s("host:5000"), "img".into(), None, None)
        );
        assert_eq!(
            parts("host:5000/team/img:v1"),
            (s("host:5000"), "team/img".into(), s("v1"), None)
        );
        assert_eq!(
            parts(&format!("quay.io/openshift/cli:latest@{DIGEST}")),
            (s("quay.io"), "openshift/cli".into(), s("latest"), s(DIGEST))
        );
        assert_eq!(
            parts(&format!("img@{DIGEST}")),
            (None, "img".into(), None, s(DIGEST))
        );
        assert_eq!(
            parts("localhost/img"),
            (s("localhost"), "img".into(), None, None)
        );
        assert_eq!(
            parts("[::1]:5000/img:2"),
            (s("[::1]:5000"), "img".into(), s("2"), None)
        );
        // A first component without '.', ':' or "localhost" is a path.
        assert_eq!(
            parts("library/nginx"),
            (None, "library/nginx".into(), None, None)
        );
        // Upper case makes the first component a registry.
        assert_eq!(
            parts("Registry/img"),
            (s("Registry"), "img".into(), None, None)
        );
        // A bare `name:5000` is a tag, not a port.
        assert_eq!(parts("host:5000"), (None, "host".into(), s("5000"), None));
        assert_eq!(
            parts("a__b/c-d---e/f.g_h"),
            (None, "a__b/c-d---e/f.g_h".into(), None, None)
        );
    }

    #[test]
    fn defaulting_tag_follows_parse_image_name() {
        let tag = |text: &str| {
            ImageReference::parse(text)
                .unwrap()
                .defaulting_tag()
                .map(str::to_owned)
        };
        assert_eq!(tag("img").as_deref(), Some("latest"));
        assert_eq!(tag("img:latest").as_deref(), Some("latest"));
        assert_eq!(tag("host:5000/img").as_deref(), Some("latest"));
        assert_eq!(
            tag(&format!("img:latest@{DIGEST}")).as_deref(),
            Some("latest")
        );
        assert_eq!(tag(&format!("img@{DIGEST}")), None);
        assert_eq!(tag("img:v1").as_deref(), Some("v1"));
    }

    #[test]
    fn rejects_what_the_kubelet_rejects() {
        use ReferenceError::*;
        let err = |text: &str| ImageReference::parse(text).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("Nginx"), UpperCase);
        assert_eq!(err("quay.io/Team/img"), UpperCase);
        assert!(matches!(err("img:"), BadTag(_)));
        assert!(matches!(err("img:-x"), BadTag(_)));
        assert!(matches!(
            err(&format!("img:{}", "a".repeat(129))),
            BadTag(_)
        ));
        assert!(matches!(err("img@sha256:abc"), BadDigest(_)));
        assert!(matches!(
            err("img@md5:0123456789abcdef0123456789abcdef"),
            BadDigest(_)
        ));
        assert!(matches!(
            err(&format!("img@{}", DIGEST.to_uppercase())),
            BadDigest(_)
        ));
        assert!(matches!(err("quay.io//img"), BadPath(_)));
        assert!(matches!(err("img-"), BadPath(_)));
        assert!(matches!(err("a...b"), BadPath(_)));
        assert!(matches!(err("quay.io/"), BadPath(_)));
        assert!(matches!(err("-bad.io/img"), BadRegistry(_)));
        assert!(matches!(err("host:port/img"), BadRegistry(_)));
        assert!(matches!(err("[::zz]/img"), BadRegistry(_)));
        assert!(matches!(err(" img"), BadPath(_)));
        assert_eq!(err(&"a".repeat(256)), TooLong);
        assert_eq!(err(&"ab".repeat(32)), ImageId);
    }

    #[test]
    fn short_names_qualify_to_docker_hub() {
        let q = |text: &str| {
            ImageReference::parse(text)
                .unwrap()
                .fully_qualified()
                .to_string()
        };
        assert_eq!(q("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(q("team/app"), "docker.io/team/app");
        assert_eq!(q("quay.io/team/app"), "quay.io/team/app");
        assert!(ImageReference::parse("nginx").unwrap().is_short_name());
        assert!(
            !ImageReference::parse("localhost/nginx")
                .unwrap()
                .is_short_name()
        );
        let round = format!("quay.io/a/b:1@{DIGEST}");
        assert_eq!(ImageReference::parse(&round).unwrap().to_string(), round);
    }
}
