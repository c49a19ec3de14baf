//! The registry catalog: which host names are registries, and of what kind.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a registry host is for. Names match the report schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Serves image manifests and blobs (the registry API).
    ImageRegistry,
    /// Object storage or CDN that registries redirect blob downloads to.
    BlobStorage,
    /// Image or release signatures (sigstore attachments, OpenShift's
    /// signature store).
    SignatureStore,
    /// The OpenShift update service (Cincinnati).
    UpdateService,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::ImageRegistry => "image-registry",
            Category::BlobStorage => "blob-storage",
            Category::SignatureStore => "signature-store",
            Category::UpdateService => "update-service",
        }
    }
}

/// Where a catalog entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Builtin,
    /// `--registry` on the command line.
    CommandLine,
}

/// A host pattern: an exact name, or `*.suffix` for every name below suffix
/// (not the suffix itself, as with TLS wildcards; list it separately).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    Exact(String),
    /// Holds the suffix with its leading dot: `*.quay.io` -> `.quay.io`.
    Subdomains(String),
}

impl Pattern {
    /// Parses `name` or `*.suffix`, rejecting what cannot be a host pattern.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let lowered = text.trim().to_ascii_lowercase();
        let (wildcard, host) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lowered.as_str()),
        };
        let host = host.trim_end_matches('.');
        if host.is_empty() {
            return Err(PatternError::Empty);
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Err(PatternError::Address(text.to_string()));
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'))
        {
            return Err(PatternError::Character {
                pattern: text.to_string(),
                bad,
            });
        }
        if host
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
            || host.len() > 253
        {
            return Err(PatternError::Label(text.to_string()));
        }
        Ok(if wildcard {
            Pattern::Subdomains(format!(".{host}"))
        } else {
            Pattern::Exact(host.to_string())
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Pattern::Exact(name) => host == name,
            Pattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }

    /// Longer patterns are more specific; exact beats wildcard.
    fn specificity(&self) -> (bool, usize) {
        match self {
            Pattern::Exact(name) => (true, name.len()),
            Pattern::Subdomains(suffix) => (false, suffix.len()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatternError {
    #[error("an empty registry pattern; give a host name such as quay.io or *.example.com")]
    Empty,
    #[error(
        "registry pattern {0:?} is an IP address; give the host name clients resolve (addresses are learned from DNS)"
    )]
    Address(String),
    #[error(
        "registry pattern {pattern:?} contains {bad:?}; give a bare host name such as quay.io or *.example.com, without scheme, port or path"
    )]
    Character { pattern: String, bad: char },
    #[error("registry pattern {0:?} has an empty or over-long label")]
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub pattern: Pattern,
    pub category: Category,
    pub source: Source,
}

/// The defaults worth shipping (shared/DOMAIN.md, "Registry hosts").
const BUILTIN: &[(&str, Category)] = &[
    ("quay.io", Category::ImageRegistry),
    ("*.quay.io", Category::ImageRegistry),
    // Quay redirects blob downloads to its CDN and S3 bucket.
    ("cdn.quay.io", Category::BlobStorage),
    ("cdn01.quay.io", Category::BlobStorage),
    ("cdn02.quay.io", Category::BlobStorage),
    ("cdn03.quay.io", Category::BlobStorage),
    (
        "quayio-production-s3.s3.amazonaws.com",
        Category::BlobStorage,
    ),
    ("registry.redhat.io", Category::ImageRegistry),
    ("registry.access.redhat.com", Category::ImageRegistry),
    ("registry.connect.redhat.com", Category::ImageRegistry),
    ("registry.ci.openshift.org", Category::ImageRegistry),
    ("*.ci.openshift.org", Category::ImageRegistry),
    ("docker.io", Category::ImageRegistry),
    ("registry-1.docker.io", Category::ImageRegistry),
    ("auth.docker.io", Category::ImageRegistry),
    ("production.cloudflare.docker.com", Category::BlobStorage),
    ("gcr.io", Category::ImageRegistry),
    ("*.gcr.io", Category::ImageRegistry),
    ("*.pkg.dev", Category::ImageRegistry),
    ("ghcr.io", Category::ImageRegistry),
    ("registry.k8s.io", Category::ImageRegistry),
    ("public.ecr.aws", Category::ImageRegistry),
    ("mcr.microsoft.com", Category::ImageRegistry),
    ("mirror.openshift.com", Category::SignatureStore),
    ("storage.googleapis.com", Category::SignatureStore),
    ("api.openshift.com", Category::UpdateService),
];

/// Built-in entries plus the user's. Lookups pick the most specific match.
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
}

impl Catalog {
    pub fn builtin() -> Catalog {
        let entries = BUILTIN
            .iter()
            .map(|(text, category)| Entry {
                pattern: Pattern::parse(text).expect("built-in patterns are valid"),
                category: *category,
                source: Source::Builtin,
            })
            .collect();
        Catalog { entries }
    }

    /// Adds a user pattern; the built-in entries stay.
    pub fn add(&mut self, pattern: Pattern, category: Category, source: Source) {
        self.entries.push(Entry {
            pattern,
            category,
            source,
        });
    }

    /// The most specific entry matching a normalized host name.
    pub fn lookup(&self, host: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|entry| entry.pattern.matches(host))
            .max_by_key(|entry| entry.pattern.specificity())
    }

    /// Names that can be resolved up front (wildcards cannot).
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.pattern {
                Pattern::Exact(name) => Some(name.as_str()),
                Pattern::Subdomains(_) => None,
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_exact_and_subdomains() {
        let catalog = Catalog::builtin();
        let category = |host: &str| catalog.lookup(host).map(|e| e.category);
        assert_eq!(category("quay.io"), Some(Category::ImageRegistry));
        assert_eq!(category("cdn01.quay.io"), Some(Category::BlobStorage));
        assert_eq!(category("cdn04.quay.io"), Some(Category::ImageRegistry));
        assert_eq!(category("us-docker.pkg.dev"), Some(Category::ImageRegistry));
        assert_eq!(
            category("mirror.openshift.com"),
            Some(Category::SignatureStore)
        );
        assert_eq!(category("api.openshift.com"), Some(Category::UpdateService));
        // A wildcard does not match its bare suffix, nor look-alike names.
        assert_eq!(category("pkg.dev"), None);
        assert_eq!(category("notquay.io"), None);
        assert_eq!(category("quay.io.evil.example"), None);
        assert_eq!(category("example.com"), None);
    }

    #[test]
    fn user_patterns_add_to_the_builtin_list() {
        let mut catalog = Catalog::builtin();
        let before = catalog.len();
        catalog.add(
            Pattern::parse("*.Example.TEST.").unwrap(),
            Category::ImageRegistry,
            Source::CommandLine,
        );
        assert_eq!(catalog.len(), before + 1);
        let entry = catalog.lookup("registry.example.test").unwrap();
        assert_eq!(entry.source, Source::CommandLine);
        assert_eq!(entry.pattern.to_string(), "*.example.test");
        assert!(catalog.lookup("quay.io").is_some());
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("*."), Err(PatternError::Empty));
        assert!(matches!(
            Pattern::parse("quay.io:443"),
            Err(PatternError::Character { bad: ':', .. })
        ));
        assert!(matches!(
            Pattern::parse("https://quay.io"),
            Err(PatternError::Character { .. })
        ));
        assert!(matches!(
            Pattern::parse("10.0.0.1"),
            Err(PatternError::Address(_))
        ));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::Label(_))
        ));
        assert_eq!(
            Pattern::parse("Quay.IO."),
            Ok(Pattern::Exact("quay.io".into()))
        );
    }

    #[test]
    fn exact_names_exclude_wildcards() {
        let names: Vec<_> = Catalog::builtin().exact_names().map(String::from).collect();
        assert!(names.contains(&"registry.redhat.io".to_string()));
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with('*') && !n.starts_with('.'))
        );
    }
}
