//! /etc/containers/registries.conf and registries.conf.d: the registries a
//! node's container tools (CRI-O, podman, skopeo) are configured to use.
//!
//! Semantics follow containers-registries.conf(5) and
//! containers-registries.conf.d(5): the main file first, then every `*.conf`
//! in the drop-in directory in lexical order; a later `[[registry]]` with the
//! same prefix replaces an earlier one, a later `unqualified-search-registries`
//! replaces the list, `[aliases]` merge key by key. The main file may use the
//! old v1 format (`[registries.search]`, `.insecure`, `.block`); drop-ins must
//! be v2. OpenShift's ImageDigestMirrorSet / ImageTagMirrorSet / ICSP are
//! rendered into this file by the machine-config operator.
//!
//! Parsing is pure (`parse_file`, `merge`); `load` reads the files.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use observer_report::{
    attempt::{Category, Source},
    policy::{MirroredSource, RegistriesConfReport},
};
use serde::{Deserialize, Serialize};

use super::{Catalog, Pattern, PatternError};
use crate::textfile::{self, FileError};

pub const DEFAULT_FILE: &str = "/etc/containers/registries.conf";
pub const DEFAULT_DIR: &str = "/etc/containers/registries.conf.d";

/// One `[[registry]]` table, after v1 conversion and drop-in merging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// What image references it applies to (`quay.io/openshift-release-dev`,
    /// `*.example.com`); defaults to `location`.
    pub prefix: String,
    /// Where references under `prefix` are pulled from: the source a client
    /// contacts when the mirrors fail.
    pub location: String,
    pub blocked: bool,
    pub insecure: bool,
    /// Mirrors are used only for digest references; tag pulls go straight
    /// to the source.
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<String>,
    /// The file that defined this table (the last one, after merging).
    pub file: PathBuf,
}

/// The merged configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    pub registries: Vec<Registry>,
    pub unqualified_search: Vec<String>,
    /// Short-name aliases: name -> image reference.
    pub aliases: BTreeMap<String, String>,
}

/// One file as written: v2 keys, and the v1 `[registries.*]` tables.
/// Unknown keys are ignored: this is another program's format, and keys we
/// do not need (credential-helpers, short-name-mode, ...) must not stop us.
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    unqualified_search_registries: Option<Vec<String>>,
    aliases: Option<BTreeMap<String, String>>,
    /// v1 tables, with the position of `[registries]` for error messages.
    registries: Option<toml::Spanned<RawV1>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "RawRegistryFields")]
struct RawRegistry {
    prefix: String,
    location: String,
    blocked: bool,
    insecure: bool,
    mirror_by_digest_only: bool,
    mirrors: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistryFields {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: String,
}

// serde reports the error by its Display: a String suffices here.
impl TryFrom<RawRegistryFields> for RawRegistry {
    type Error = String;

    fn try_from(raw: RawRegistryFields) -> Result<RawRegistry, String> {
        let location = raw.location.unwrap_or_default().trim().to_string();
        let prefix = raw.prefix.unwrap_or_default().trim().to_string();
        let prefix = if prefix.is_empty() {
            location.clone()
        } else {
            prefix
        };
        if prefix.is_empty() {
            return Err("a [[registry]] needs a `location` or a `prefix`".into());
        }
        // Validate every host now, so the error points at this table.
        registry_host(if location.is_empty() {
            &prefix
        } else {
            &location
        })
        .map_err(|e| e.to_string())?;
        for mirror in &raw.mirror {
            registry_host(&mirror.location).map_err(|e| e.to_string())?;
        }
        Ok(RawRegistry {
            prefix,
            location,
            blocked: raw.blocked,
            insecure: raw.insecure,
            mirror_by_digest_only: raw.mirror_by_digest_only,
            mirrors: raw.mirror.into_iter().map(|m| m.location).collect(),
        })
    }
}

/// The parsed contents of one file, before merging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub registries: Vec<Registry>,
    pub unqualified_search: Option<Vec<String>>,
    pub aliases: BTreeMap<String, String>,
}

/// Parses one file. `drop_in` files must be v2, as containers-image requires.
pub fn parse_file(file: &Path, text: &str, drop_in: bool) -> Result<ParsedFile, FileError> {
    let raw: RawFile = textfile::parse_toml(file.to_path_buf(), text)?;
    let mut parsed = ParsedFile {
        registries: raw
            .registry
            .into_iter()
            .map(|r| Registry {
                location: if r.location.is_empty() {
                    r.prefix.clone()
                } else {
                    r.location
                },
                prefix: r.prefix,
                blocked: r.blocked,
                insecure: r.insecure,
                mirror_by_digest_only: r.mirror_by_digest_only,
                mirrors: r.mirrors,
                file: file.to_path_buf(),
            })
            .collect(),
        unqualified_search: raw.unqualified_search_registries,
        aliases: raw.aliases.unwrap_or_default(),
    };
    if let Some(v1) = raw.registries {
        let at = v1.span().start;
        let v2_used = !parsed.registries.is_empty() || parsed.unqualified_search.is_some();
        if drop_in || v2_used {
            let problem = if drop_in {
                "the v1 format ([registries.search], [registries.block], ...) is not allowed in a \
                 drop-in file; write v2 [[registry]] tables (containers-registries.conf.d(5))"
            } else {
                "mixes the v1 format ([registries.*]) with v2 keys ([[registry]], \
                 unqualified-search-registries); use one format (containers-registries.conf(5))"
            };
            return Err(FileError::at_offset(file, text, at, problem));
        }
        let v1 = v1.into_inner();
        let search = v1.search.map(|l| l.registries).unwrap_or_default();
        for name in search.iter().chain(
            [&v1.insecure, &v1.block]
                .into_iter()
                .flatten()
                .flat_map(|l| &l.registries),
        ) {
            registry_host(name)
                .map_err(|problem| FileError::at_offset(file, text, at, problem.to_string()))?;
        }
        // v1 lists become one [[registry]] per name, as containers-image
        // converts them; a name in both lists is insecure and blocked.
        let mut registries: Vec<Registry> = Vec::new();
        for (list, blocked) in [(&v1.insecure, false), (&v1.block, true)] {
            for name in list.iter().flat_map(|l| &l.registries) {
                let index = match registries.iter().position(|r| &r.prefix == name) {
                    Some(index) => index,
                    None => {
                        registries.push(Registry {
                            prefix: name.clone(),
                            location: name.clone(),
                            blocked: false,
                            insecure: false,
                            mirror_by_digest_only: false,
                            mirrors: Vec::new(),
                            file: file.to_path_buf(),
                        });
                        registries.len() - 1
                    }
                };
                registries[index].blocked |= blocked;
                registries[index].insecure |= !blocked;
            }
        }
        parsed.registries = registries;
        parsed.unqualified_search = Some(search);
    }
    for (name, reference) in &parsed.aliases {
        registry_host(reference)
            .map_err(|problem| FileError::whole(file, format!("alias {name:?}: {problem}")))?;
    }
    Ok(parsed)
}

/// Applies `later` over `merged`, as drop-ins are applied.
pub fn merge(merged: &mut RegistriesConf, file: &Path, later: ParsedFile) {
    merged.files.push(file.to_path_buf());
    for registry in later.registries {
        match merged
            .registries
            .iter_mut()
            .find(|r| r.prefix == registry.prefix)
        {
            Some(existing) => *existing = registry,
            None => merged.registries.push(registry),
        }
    }
    if let Some(search) = later.unqualified_search {
        merged.unqualified_search = search;
    }
    merged.aliases.extend(later.aliases);
}

/// Where to read from; `required` when the user named the paths, so a typo
/// is an error rather than an empty import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub file: PathBuf,
    pub dir: PathBuf,
    pub required: bool,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths::under(Path::new("/"))
    }
}

impl Paths {
    /// The default files under `host_root` (`/`, or the host's root as
    /// mounted in the agent's container).
    pub fn under(host_root: &Path) -> Paths {
        let inside = |path: &str| host_root.join(path.trim_start_matches('/'));
        Paths {
            file: inside(DEFAULT_FILE),
            dir: inside(DEFAULT_DIR),
            required: false,
        }
    }
}

/// Reads the main file and the drop-ins. Missing default paths are normal
/// (not every machine has container tools); a file that exists but cannot be
/// read or parsed is an error.
pub fn load(paths: &Paths) -> Result<RegistriesConf, FileError> {
    let mut merged = RegistriesConf::default();
    match std::fs::read_to_string(&paths.file) {
        Ok(text) => {
            let parsed = parse_file(&paths.file, &text, false)?;
            merge(&mut merged, &paths.file, parsed);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !paths.required => {}
        Err(e) => return Err(read_error(&paths.file, &e)),
    }
    let mut drop_ins: Vec<PathBuf> = match std::fs::read_dir(&paths.dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !paths.required => Vec::new(),
        Err(e) => return Err(read_error(&paths.dir, &e)),
    };
    drop_ins.sort();
    for path in drop_ins {
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, &e))?;
        let parsed = parse_file(&path, &text, true)?;
        merge(&mut merged, &path, parsed);
    }
    Ok(merged)
}

fn read_error(path: &Path, error: &io::Error) -> FileError {
    FileError::whole(
        path,
        format!("cannot read it ({error}); fix the path under registries_conf in the config file"),
    )
}

/// A registries.conf location whose host is not a host pattern.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("registry location {location:?}: {error}")]
pub struct RegistryHostError {
    /// The location without its `https://` or `http://`.
    pub location: String,
    pub error: PatternError,
}

/// The host of a registries.conf location or prefix, as a catalog pattern:
/// `host[:port][/path]`, `[v6]:port/path`, `*.example.com`, or an address.
pub fn registry_host(location: &str) -> Result<Pattern, RegistryHostError> {
    let location = location.trim();
    let location = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let authority = location.split('/').next().unwrap_or_default();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Pattern::Network(IpNet::from(ip)));
    }
    Pattern::parse(host).map_err(|error| RegistryHostError {
        location: location.to_string(),
        error,
    })
}

impl RegistriesConf {
    /// Adds every registry the configuration names to the catalog: sources,
    /// mirrors, unqualified-search registries and alias targets (all of them
    /// image registries). Sources with mirrors are flagged `mirrored`,
    /// blocked ones `blocked`.
    pub fn apply(&self, catalog: &mut Catalog) {
        let host = |location: &str| registry_host(location).ok();
        for registry in &self.registries {
            if let Some(pattern) = host(&registry.location) {
                let entry = catalog.add(pattern, Category::ImageRegistry, Source::RegistriesConf);
                entry.blocked |= registry.blocked;
                entry.mirrored |= !registry.mirrors.is_empty();
            }
            for mirror in &registry.mirrors {
                if let Some(pattern) = host(mirror) {
                    catalog.add(pattern, Category::ImageRegistry, Source::RegistriesConf);
                }
            }
        }
        let others = self.unqualified_search.iter().chain(self.aliases.values());
        for pattern in others.filter_map(|l| host(l)) {
            catalog.add(pattern, Category::ImageRegistry, Source::RegistriesConf);
        }
    }

    pub fn report(&self) -> RegistriesConfReport {
        RegistriesConfReport {
            files: self.files.iter().map(|p| p.display().to_string()).collect(),
            mirrored: self
                .registries
                .iter()
                .filter(|r| !r.mirrors.is_empty())
                .map(|r| MirroredSource {
                    prefix: r.prefix.clone(),
                    location: r.location.clone(),
                    mirrors: r.mirrors.clone(),
                    mirror_by_digest_only: r.mirror_by_digest_only,
                })
                .collect(),
            blocked: self
                .registries
                .iter()
                .filter(|r| r.blocked)
                .map(|r| r.prefix.clone())
                .collect(),
            unqualified_search: self.unqualified_search.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "quay.io/openshift-release-dev/ocp-release"
location = "quay.io/openshift-release-dev/ocp-release"
mirror-by-digest-only = true

[[registry.mirror]]
location = "mirror.corp.example:5000/ocp4/release"

[[registry.mirror]]
location = "198.18.5.10:5000/ocp4/release"

[[registry]]
location = "registry.blocked.example"
blocked = true

[[registry]]
prefix = "*.internal.example"
insecure = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"#;

    const V1: &str = r#"
[registries.search]
registries = ["registry.access.redhat.com", "quay.io"]

[registries.insecure]
registries = ["[2001:db8::5]:5000"]

[registries.block]
registries = ["docker.io", "evil.example"]
"#;

    fn parse(text: &str, drop_in: bool) -> Result<ParsedFile, FileError> {
        parse_file(Path::new("/etc/containers/registries.conf"), text, drop_in)
    }

    #[test]
    fn v2_registries_mirrors_blocked_and_search() {
        let parsed = parse(V2, false).unwrap();
        assert_eq!(parsed.registries.len(), 3);
        let release = &parsed.registries[0];
        assert_eq!(
            release.location,
            "quay.io/openshift-release-dev/ocp-release"
        );
        assert!(release.mirror_by_digest_only);
        assert_eq!(
            release.mirrors,
            [
                "mirror.corp.example:5000/ocp4/release",
                "198.18.5.10:5000/ocp4/release"
            ]
        );
        assert!(parsed.registries[1].blocked);
        assert_eq!(parsed.registries[1].prefix, "registry.blocked.example");
        // A prefix without a location is its own location.
        assert_eq!(parsed.registries[2].location, "*.internal.example");
        assert_eq!(
            parsed.unqualified_search,
            Some(vec![
                "registry.access.redhat.com".into(),
                "docker.io".into()
            ])
        );
        assert_eq!(
            parsed.aliases["fedora"],
            "registry.fedoraproject.org/fedora"
        );

        let mut merged = RegistriesConf::default();
        merge(&mut merged, Path::new("/r.conf"), parsed);
        let mut catalog = Catalog::builtin();
        merged.apply(&mut catalog);
        // The source keeps its built-in entry, flagged as mirrored.
        let quay = catalog.lookup("quay.io").unwrap();
        assert_eq!(quay.source, Source::Builtin);
        assert!(quay.mirrored);
        // Mirrors are registries too: by name, and by address.
        let mirror = catalog.lookup("mirror.corp.example").unwrap();
        assert_eq!(mirror.source, Source::RegistriesConf);
        assert!(!mirror.mirrored);
        let by_address = catalog
            .lookup_address(&"198.18.5.10".parse().unwrap())
            .unwrap();
        assert_eq!(by_address.pattern.to_string(), "198.18.5.10/32");
        assert!(catalog.lookup("registry.blocked.example").unwrap().blocked);
        assert!(catalog.lookup("a.internal.example").is_some());
        assert!(catalog.lookup("registry.fedoraproject.org").is_some());
        let report = merged.report();
        assert_eq!(report.mirrored.len(), 1);
        assert!(report.mirrored[0].mirror_by_digest_only);
        assert_eq!(report.blocked, ["registry.blocked.example"]);
    }

    #[test]
    fn v1_converts_to_registries() {
        let parsed = parse(V1, false).unwrap();
        assert_eq!(
            parsed.unqualified_search,
            Some(vec!["registry.access.redhat.com".into(), "quay.io".into()])
        );
        let find = |p: &str| parsed.registries.iter().find(|r| r.prefix == p).unwrap();
        assert!(find("[2001:db8::5]:5000").insecure);
        assert!(find("docker.io").blocked && !find("docker.io").insecure);
        assert!(find("evil.example").blocked);
        let mut merged = RegistriesConf::default();
        merge(&mut merged, Path::new("/r.conf"), parsed);
        let mut catalog = Catalog::builtin();
        merged.apply(&mut catalog);
        assert!(catalog.lookup("docker.io").unwrap().blocked);
        assert!(catalog.lookup("evil.example").unwrap().blocked);
        assert!(
            catalog
                .lookup_address(&"2001:db8::5".parse().unwrap())
                .is_some()
        );
    }

    #[test]
    fn drop_ins_override_by_prefix_in_lexical_order() {
        let dir = std::env::temp_dir().join(format!("regconf-test-{}", std::process::id()));
        let d = dir.join("registries.conf.d");
        std::fs::create_dir_all(&d).unwrap();
        let main = dir.join("registries.conf");
        std::fs::write(&main, V2).unwrap();
        // 10- sorts before 20-; 20- wins for the same prefix.
        std::fs::write(
            d.join("20-later.conf"),
            "unqualified-search-registries = [\"registry.example.test\"]\n\
             [[registry]]\nlocation = \"registry.blocked.example\"\nblocked = false\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-first.conf"),
            "[[registry]]\nlocation = \"registry.blocked.example\"\nblocked = true\n\
             [[registry.mirror]]\nlocation = \"m.example\"\n\
             [aliases]\n\"ubi\" = \"registry.access.redhat.com/ubi9\"\n",
        )
        .unwrap();
        // Not *.conf: ignored, even though it would not parse.
        std::fs::write(d.join("README"), "not toml [").unwrap();
        let loaded = load(&Paths {
            file: main.clone(),
            dir: d.clone(),
            required: true,
        });
        std::fs::remove_dir_all(&dir).unwrap();
        let conf = loaded.unwrap();
        assert_eq!(
            conf.files,
            [main, d.join("10-first.conf"), d.join("20-later.conf")]
        );
        let blocked = conf
            .registries
            .iter()
            .find(|r| r.prefix == "registry.blocked.example")
            .unwrap();
        assert!(
            !blocked.blocked && blocked.mirrors.is_empty(),
            "{blocked:?}"
        );
        assert_eq!(conf.registries.len(), 3);
        assert_eq!(conf.unqualified_search, ["registry.example.test"]);
        assert_eq!(conf.aliases.len(), 2);
    }

    #[test]
    fn missing_default_paths_are_empty_but_named_ones_are_errors() {
        let nowhere = Paths {
            file: "/nonexistent/registries.conf".into(),
            dir: "/nonexistent/registries.conf.d".into(),
            required: false,
        };
        assert_eq!(load(&nowhere).unwrap(), RegistriesConf::default());
        let err = load(&Paths {
            required: true,
            ..nowhere
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/registries.conf: cannot read it"),
            "{err}"
        );
    }

    #[test]
    fn malformed_files_name_the_line() {
        let err = parse(
            "[[registry]]\nlocation = \"quay.io\"\nblocked = \"yes\"\n",
            false,
        )
        .unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(err.field.as_deref(), Some("registry[0].blocked"), "{err}");
        let err = parse("\n\n[[registry]]\nblocked = true\n", false).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.problem.contains("needs a `location` or a `prefix`"),
            "{err}"
        );
        let err = parse("[[registry]]\nlocation = \"https://quay.io:x/y\"\n", false).unwrap_err();
        assert!(err.problem.contains("quay.io:x"), "{err}");
        let err = parse("[registries.search]\nregistries = [\n", false).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.problem.contains("unclosed array"), "{err}");
        // v1 in a drop-in, and v1 mixed with v2.
        let err = parse(V1, true).unwrap_err();
        assert!(err.problem.contains("not allowed in a drop-in"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
        let mixed = format!("unqualified-search-registries = []\n{V1}");
        let err = parse(&mixed, false).unwrap_err();
        assert!(err.problem.contains("mixes the v1 format"), "{err}");
    }

    #[test]
    fn hosts_from_locations() {
        let host = |l: &str| registry_host(l).map(|p| p.to_string());
        assert_eq!(host("quay.io").unwrap(), "quay.io");
        assert_eq!(host("Mirror.Example:5000/a/b").unwrap(), "mirror.example");
        assert_eq!(host("*.example.com").unwrap(), "*.example.com");
        assert_eq!(host("198.18.0.9:5000/x").unwrap(), "198.18.0.9/32");
        assert_eq!(host("[2001:db8::1]:5000/x").unwrap(), "2001:db8::1/128");
        assert_eq!(host("localhost").unwrap(), "localhost");
        assert!(host("").is_err());
        assert!(host("a b").is_err());
        let error = registry_host("https://a b/x").unwrap_err();
        assert_eq!(error.location, "a b/x");
        assert!(matches!(
            error.error,
            PatternError::Character { bad: ' ', .. }
        ));
        assert_eq!(
            error.to_string(),
            format!("registry location \"a b/x\": {}", error.error)
        );
    }
}
