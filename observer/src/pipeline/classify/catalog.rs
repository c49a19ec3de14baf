//! The registry catalog: which host names (and address ranges) are
//! registries, and of what kind.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use observer_report::attempt::{Category, Source};
use serde::Deserialize;

/// A host pattern: an exact name, or `*.suffix` for every name below suffix
/// (not the suffix itself, as with TLS wildcards; list it separately); or an
/// address range, for registries reached without a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    Exact(String),
    /// Holds the suffix with its leading dot: `*.quay.io` -> `.quay.io`.
    Subdomains(String),
    /// A CIDR (`198.18.0.0/15`, `2001:db8::/32`): matches connect()
    /// destinations, never names.
    Network(IpNet),
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

    /// A CIDR pattern; host bits set (`198.18.0.1/15`) are a typo more often
    /// than not, so they are refused rather than silently masked.
    pub fn parse_network(text: &str) -> Result<Pattern, PatternError> {
        let net: IpNet = text
            .trim()
            .parse()
            .map_err(|_| PatternError::Network(text.to_string()))?;
        if net.trunc() != net {
            return Err(PatternError::HostBits {
                given: text.to_string(),
                network: net.trunc().to_string(),
            });
        }
        Ok(Pattern::Network(net))
    }

    /// Does this pattern match `host` (already normalized: lowercase, no
    /// trailing dot)? Address ranges match no name.
    pub fn matches_host(&self, host: &str) -> bool {
        match self {
            Pattern::Exact(name) => host == name,
            Pattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            Pattern::Network(_) => false,
        }
    }

    /// Longer patterns are more specific; exact beats wildcard; for
    /// networks, longer prefixes.
    fn specificity(&self) -> (bool, usize) {
        match self {
            Pattern::Exact(name) => (true, name.len()),
            Pattern::Subdomains(suffix) => (false, suffix.len()),
            Pattern::Network(net) => (false, usize::from(net.prefix_len())),
        }
    }
}

/// Host patterns in config files: validated while deserializing, so a bad
/// one is reported at its own line.
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Pattern, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Subdomains(suffix) => write!(f, "*{suffix}"),
            Pattern::Network(net) => write!(f, "{net}"),
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
    #[error("{0:?} is not a CIDR; write an address range such as 198.18.0.0/15 or 2001:db8::/32")]
    Network(String),
    #[error("CIDR {given:?} has host bits set; write the network address, {network}")]
    HostBits { given: String, network: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    pub pattern: Pattern,
    pub category: Category,
    pub source: Source,
    /// registries.conf marks this registry `blocked = true`: clients refuse
    /// to pull from it, yet a lookup or connect() can still happen.
    pub blocked: bool,
    /// registries.conf gives mirrors for this registry (or a repository on
    /// it): a contact may be the fallback to the source that OpenShift's
    /// default `mirrorSourcePolicy: AllowContactingSource` permits.
    pub mirrored: bool,
}

impl Entry {
    pub fn new(pattern: Pattern, category: Category, source: Source) -> Entry {
        Entry {
            pattern,
            category,
            source,
            blocked: false,
            mirrored: false,
        }
    }
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
            .map(|(text, category)| {
                Entry::new(
                    Pattern::parse(text).expect("built-in patterns are valid"),
                    *category,
                    Source::Builtin,
                )
            })
            .collect();
        Catalog { entries }
    }

    /// Adds a user pattern; the built-in entries stay. A pattern already in
    /// the catalog keeps its first category and source (the built-in
    /// category of quay.io is better than "a registry from
    /// registries.conf"); only the blocked/mirrored flags add up.
    pub fn add(&mut self, pattern: Pattern, category: Category, source: Source) -> &mut Entry {
        let index = match self.entries.iter().position(|e| e.pattern == pattern) {
            Some(index) => index,
            None => {
                self.entries.push(Entry::new(pattern, category, source));
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    /// The most specific entry matching a normalized host name.
    pub fn lookup(&self, host: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|entry| entry.pattern.matches_host(host))
            .max_by_key(|entry| entry.pattern.specificity())
    }

    /// The most specific CIDR entry containing `ip`: for registries reached
    /// by address, where no DNS answer names them.
    pub fn lookup_address(&self, ip: &IpAddr) -> Option<&Entry> {
        // A v4-mapped v6 destination (::ffff:198.18.0.1) is the v4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
            IpAddr::V4(_) => *ip,
        };
        self.entries
            .iter()
            .filter(|entry| matches!(&entry.pattern, Pattern::Network(net) if net.contains(&ip)))
            .max_by_key(|entry| entry.pattern.specificity())
    }

    /// Names that can be resolved up front (wildcards and ranges cannot).
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter_map(|entry| match &entry.pattern {
                Pattern::Exact(name) => Some(name.as_str()),
                Pattern::Subdomains(_) | Pattern::Network(_) => None,
            })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
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
    fn cidr_entries_match_addresses_not_names() {
        let mut catalog = Catalog::builtin();
        catalog.add(
            Pattern::parse_network("198.18.0.0/15").unwrap(),
            Category::BlobStorage,
            Source::Config,
        );
        catalog.add(
            Pattern::parse_network("198.18.4.0/24").unwrap(),
            Category::ImageRegistry,
            Source::Config,
        );
        catalog.add(
            Pattern::parse_network("2001:db8::/32").unwrap(),
            Category::ImageRegistry,
            Source::Config,
        );
        let at = |ip: &str| {
            catalog
                .lookup_address(&ip.parse().unwrap())
                .map(|e| e.pattern.to_string())
        };
        assert_eq!(at("198.18.0.1").as_deref(), Some("198.18.0.0/15"));
        assert_eq!(at("198.19.255.255").as_deref(), Some("198.18.0.0/15"));
        // The longest prefix wins.
        assert_eq!(at("198.18.4.7").as_deref(), Some("198.18.4.0/24"));
        assert_eq!(at("198.20.0.1"), None);
        assert_eq!(at("2001:db8::1").as_deref(), Some("2001:db8::/32"));
        assert_eq!(at("2001:db9::1"), None);
        // A v4-mapped IPv6 destination is its IPv4 address.
        assert_eq!(at("::ffff:198.18.0.9").as_deref(), Some("198.18.0.0/15"));
        // Ranges never match names, nor are they resolved.
        assert_eq!(catalog.lookup("198.18.0.1"), None);
        assert!(catalog.exact_names().all(|n| !n.contains('/')));
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(matches!(
            Pattern::parse_network("198.18.0.0"),
            Err(PatternError::Network(_))
        ));
        assert!(matches!(
            Pattern::parse_network("198.18.0.0/33"),
            Err(PatternError::Network(_))
        ));
        let err = Pattern::parse_network("198.18.0.1/15").unwrap_err();
        assert!(err.to_string().contains("198.18.0.0/15"), "{err}");
    }

    #[test]
    fn adding_a_known_pattern_keeps_its_category_and_merges_flags() {
        let mut catalog = Catalog::builtin();
        let before = catalog.len();
        let entry = catalog.add(
            Pattern::parse("quay.io").unwrap(),
            Category::ImageRegistry,
            Source::RegistriesConf,
        );
        entry.mirrored = true;
        assert_eq!(catalog.len(), before);
        let quay = catalog.lookup("quay.io").unwrap();
        assert_eq!(quay.source, Source::Builtin);
        assert!(quay.mirrored && !quay.blocked);
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
