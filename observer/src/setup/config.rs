//! The `--config` file (YAML or TOML, by extension): catalog additions,
//! registries.conf import, policy, component rules, the initial phase and
//! outputs. docs/CONFIG.md documents every key; docs/examples/ holds a
//! commented example in each format, which the tests parse.
//!
//! Every section and key is optional; unknown keys are errors (a typo must
//! not silently weaken a policy). Errors name the file, line, column and
//! field, and the agent exits 2.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use observer_report::attempt::{Category, Source};
use serde::Deserialize;

use crate::{
    pipeline::{
        attribute::component_rules::ComponentRule,
        classify::{Catalog, Pattern, registries_conf},
        input::Settings,
        phase::PhaseName,
        verdict::Policy,
    },
    textfile,
    textfile::{FileError, Format},
};

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub catalog: CatalogConfig,
    pub registries_conf: RegistriesConfConfig,
    pub policy: Policy,
    /// Rules that name components (docs/ATTRIBUTION.md), checked after
    /// `--component-rule`s.
    pub component_rules: Vec<ComponentRule>,
    pub phases: PhasesConfig,
    pub outputs: OutputsConfig,
    pub kubernetes: KubernetesConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Added to the built-in catalog.
    pub entries: Vec<CatalogEntry>,
}

/// A host pattern or a CIDR, and what kind of registry it is.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawCatalogEntry")]
pub struct CatalogEntry {
    pub pattern: Pattern,
    pub category: Category,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogEntry {
    pattern: Option<Pattern>,
    cidr: Option<String>,
    category: Option<Category>,
}

impl TryFrom<RawCatalogEntry> for CatalogEntry {
    type Error = String;

    fn try_from(raw: RawCatalogEntry) -> Result<CatalogEntry, String> {
        let pattern = match (raw.pattern, raw.cidr) {
            (Some(pattern), None) => pattern,
            (None, Some(cidr)) => Pattern::parse_network(&cidr).map_err(|e| e.to_string())?,
            _ => {
                return Err("a catalog entry needs exactly one of `pattern` (quay.io, \
                     *.corp.example) or `cidr` (198.18.0.0/15)"
                    .into());
            }
        };
        Ok(CatalogEntry {
            pattern,
            category: raw.category.unwrap_or(Category::ImageRegistry),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistriesConfConfig {
    /// Import registries.conf at all (default true).
    pub enabled: bool,
    /// Default /etc/containers/registries.conf; when given, it must exist.
    pub file: Option<PathBuf>,
    /// Default /etc/containers/registries.conf.d; when given, it must exist.
    pub dir: Option<PathBuf>,
}

impl Default for RegistriesConfConfig {
    fn default() -> RegistriesConfConfig {
        RegistriesConfConfig {
            enabled: true,
            file: None,
            dir: None,
        }
    }
}

impl RegistriesConfConfig {
    /// The files to read: the config's as given, else the defaults under
    /// the host root (`--host-root`).
    pub fn paths(&self, host_root: &Path) -> Option<registries_conf::Paths> {
        let defaults = registries_conf::Paths::under(host_root);
        self.enabled.then(|| registries_conf::Paths {
            required: self.file.is_some() || self.dir.is_some(),
            file: self.file.clone().unwrap_or(defaults.file),
            dir: self.dir.clone().unwrap_or(defaults.dir),
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhasesConfig {
    /// The phase attempts are recorded in until it is changed (default
    /// `boot`); `--phase` overrides it.
    pub initial: Option<PhaseName>,
}

/// The Kubernetes API source (kubelet `Pulling` events joined to pod
/// specs). Read at start only: a reload does not reconnect.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Use the in-cluster configuration when running in a pod (default
    /// true); `false` turns the source off unless `--kubeconfig` is given.
    pub enabled: bool,
    /// A kubeconfig to use (`--kubeconfig` overrides it).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name as the kubelet reports it (`--node-name`
    /// overrides it; default `$NODE_NAME`, else the hostname).
    pub node_name: Option<String>,
}

impl Default for KubernetesConfig {
    fn default() -> KubernetesConfig {
        KubernetesConfig {
            enabled: true,
            kubeconfig: None,
            node_name: None,
        }
    }
}

/// Where results go. Command-line flags override these.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// The JSON report (`--report`).
    pub report: Option<PathBuf>,
    /// A JSON-lines stream of attempts.
    pub events: Option<PathBuf>,
    /// A JUnit XML file for CI.
    pub junit: Option<PathBuf>,
    /// The HTTP endpoint for /metrics, /healthz, /readyz and POST /phase
    /// (`--metrics-addr`; default `127.0.0.1:9669`). Given here, failing to
    /// listen is an error, as with the flag.
    pub metrics_addr: Option<SocketAddr>,
}

/// A config file problem: exit 2 with this one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub FileError);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}", self.0)?;
        // serde's own messages (wrong type, unknown key) state the problem
        // only; ours end with the fix after a semicolon.
        if !self.0.problem.contains(';') {
            f.write_str("; see docs/CONFIG.md for the format")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Settings that cannot be built from a config that parsed: exit 2 at
/// start; on a reload the running configuration stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A registries.conf file the config imports (or its drop-ins).
    #[error("registries.conf error: {0}{hint}", hint = registries_conf_hint(.0))]
    RegistriesConf(FileError),
}

/// serde's own messages state the problem only; ours end with the fix
/// after a semicolon.
fn registries_conf_hint(error: &FileError) -> &'static str {
    if error.problem.contains(';') {
        ""
    } else {
        "; see containers-registries.conf(5)"
    }
}

/// Parses config text; `file` only names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let format = Format::of(file).ok_or_else(|| {
        ConfigError(FileError::whole(
            file,
            "unknown config format; name the file *.yaml, *.yml or *.toml",
        ))
    })?;
    textfile::parse(file, text, format).map_err(ConfigError)
}

pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError(FileError::whole(
            file,
            format!("cannot read it ({e}); check the --config path"),
        ))
    })?;
    parse(file, &text)
}

/// Builds the catalog (built-in, then `--registry`, then the config's
/// entries, then registries.conf: an earlier source's category wins for a
/// pattern listed twice), takes the policy and puts the command line's
/// component rules before the file's. Reads registries.conf.
pub fn settings(
    config: &Config,
    host_root: &Path,
    cli_registries: &[Pattern],
    cli_rules: &[ComponentRule],
) -> Result<Settings, SettingsError> {
    let mut catalog = Catalog::builtin();
    for pattern in cli_registries {
        catalog.add(
            pattern.clone(),
            Category::ImageRegistry,
            Source::CommandLine,
        );
    }
    for entry in &config.catalog.entries {
        catalog.add(entry.pattern.clone(), entry.category, Source::Config);
    }
    let registries_conf = match config.registries_conf.paths(host_root) {
        Some(paths) => {
            let conf = registries_conf::load(&paths).map_err(SettingsError::RegistriesConf)?;
            conf.apply(&mut catalog);
            Some(conf)
        }
        None => None,
    };
    Ok(Settings {
        catalog,
        policy: config.policy.clone(),
        registries_conf,
        component_rules: cli_rules
            .iter()
            .chain(&config.component_rules)
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/examples")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    /// The documented examples parse, and say the same thing in both formats.
    #[test]
    fn documented_examples_parse_alike() {
        let (yaml_path, yaml) = example("registry-observer.yaml");
        let (toml_path, toml) = example("registry-observer.toml");
        let from_yaml = parse(&yaml_path, &yaml).unwrap();
        let from_toml = parse(&toml_path, &toml).unwrap();
        assert_eq!(from_yaml, from_toml);
        let config = from_yaml;
        assert_eq!(config.policy.enforce_phases, ["boot", "upgrade"]);
        assert!(config.policy.allow.len() >= 2);
        assert!(config.policy.allow.iter().any(|r| r.expires.is_some()));
        assert!(
            config
                .catalog
                .entries
                .iter()
                .any(|e| matches!(e.pattern, Pattern::Network(_)))
        );
        assert_eq!(config.component_rules.len(), 1);
        assert!(config.outputs.metrics_addr.is_some());
        assert_eq!(config.kubernetes.node_name.as_deref(), Some("worker-0"));
        assert!(config.kubernetes.kubeconfig.is_some());
    }

    #[test]
    fn kubernetes_section_mistakes_name_file_line_and_field() {
        let err = parse(
            Path::new("c.yaml"),
            "kubernetes:
  enabled: true
  kubeconfg: /etc/k
",
        )
        .unwrap_err();
        assert_eq!(err.0.line, Some(3), "{err}");
        assert!(
            err.to_string().contains("unknown field `kubeconfg`"),
            "{err}"
        );
        let err = parse(
            Path::new("c.toml"),
            "[kubernetes]
enabled = \"yes\"
",
        )
        .unwrap_err();
        assert_eq!(err.0.line, Some(2), "{err}");
        assert_eq!(err.0.field.as_deref(), Some("kubernetes.enabled"), "{err}");
        let off = parse(
            Path::new("c.yaml"),
            "kubernetes: {enabled: false}
",
        )
        .unwrap();
        assert!(!off.kubernetes.enabled);
        assert!(Config::default().kubernetes.enabled);
    }

    #[test]
    fn empty_files_mean_defaults() {
        for name in ["c.yaml", "c.toml"] {
            let config = parse(Path::new(name), "").unwrap();
            assert_eq!(config, Config::default());
            assert_eq!(config.policy.enforce_phases, ["boot", "upgrade"]);
            assert!(config.registries_conf.enabled);
            let paths = config.registries_conf.paths(Path::new("/")).unwrap();
            assert!(!paths.required);
            assert_eq!(paths.file, Path::new(registries_conf::DEFAULT_FILE));
        }
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let yaml = "policy:\n  allow:\n    - component: skopeo\n      reason: mcd\n    - component: crio\n      reason: pre-puller\n      expires: 2026-02-30\n";
        let err = parse(Path::new("/etc/ro.yaml"), yaml).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error: /etc/ro.yaml:7:16: field `policy.allow[1].expires`: \"2026-02-30\" is not a date; write YYYY-MM-DD, e.g. 2026-12-31"
        );
        let toml = "[policy]\nenforce_phases = [\"boot\"]\n\n[[policy.allow]]\ncomponent = \"a\"\nreason = \"r\"\nexpires = 2026-02-30\n";
        let err = parse(Path::new("ro.toml"), toml).unwrap_err();
        assert_eq!(err.0.line, Some(7), "{err}");
        // TOML itself rejects the impossible date, before our check.
        assert!(
            err.to_string().starts_with("config error: ro.toml:7:"),
            "{err}"
        );

        let toml = "[[policy.allow]]\ncomponent = \"a\"\nreason = \"r\"\nexpires = 2026-12-31\n";
        let config = parse(Path::new("ro.toml"), toml).unwrap();
        assert_eq!(
            config.policy.allow[0].expires.as_ref().unwrap().as_str(),
            "2026-12-31"
        );

        let err = parse(Path::new("c.yaml"), "polcy: {}\n").unwrap_err();
        assert_eq!(err.0.line, Some(1));
        assert!(err.to_string().contains("unknown field `polcy`"), "{err}");
        assert!(
            err.to_string()
                .ends_with("see docs/CONFIG.md for the format")
        );

        let err = parse(
            Path::new("c.toml"),
            "[catalog]\n[[catalog.entries]]\npattern = \"a.example\"\ncidr = \"198.18.0.0/15\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("catalog.entries[0]"), "{err}");
        assert!(err.to_string().contains("exactly one of"), "{err}");

        let err = parse(
            Path::new("c.yaml"),
            "catalog:\n  entries:\n    - cidr: 198.18.0.1/15\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("host bits"), "{err}");
        assert_eq!(err.0.line, Some(3), "{err}");

        let err = parse(Path::new("c.yaml"), "outputs:\n  metrics_addr: localhost\n").unwrap_err();
        assert_eq!(
            err.0.field.as_deref(),
            Some("outputs.metrics_addr"),
            "{err}"
        );
        assert_eq!(err.0.line, Some(2), "{err}");

        let err = parse(Path::new("c.json"), "{}").unwrap_err();
        assert!(err.to_string().contains("*.yaml, *.yml or *.toml"), "{err}");
        let err = load(Path::new("/nonexistent/c.yaml")).unwrap_err();
        assert!(err.to_string().contains("check the --config path"), "{err}");
    }

    #[test]
    fn component_rules_are_typed_and_follow_the_command_line_rules() {
        let yaml = "component_rules:\n  - match: {namespace: openshift-machine-config-operator}\n    component: machine-config-daemon\n  - match:\n      exe: skopeo\n      label: {app.kubernetes.io/name: mirror}\n    component: mirror-job\n";
        let toml = "[[component_rules]]\ncomponent = \"machine-config-daemon\"\nmatch = { namespace = \"openshift-machine-config-operator\" }\n\n[[component_rules]]\ncomponent = \"mirror-job\"\n[component_rules.match]\nexe = \"skopeo\"\nlabel = { \"app.kubernetes.io/name\" = \"mirror\" }\n";
        let from_yaml = parse(Path::new("c.yaml"), yaml).unwrap();
        assert_eq!(from_yaml, parse(Path::new("c.toml"), toml).unwrap());
        assert_eq!(
            from_yaml.component_rules[0],
            ComponentRule::parse(
                "namespace=openshift-machine-config-operator:machine-config-daemon"
            )
            .unwrap()
        );
        assert_eq!(
            from_yaml.component_rules[1].to_string(),
            "exe=skopeo,label.app.kubernetes.io/name=mirror:mirror-job"
        );

        // The command line's rules come first: first match wins.
        let cli =
            [ComponentRule::parse("namespace=openshift-machine-config-operator:mco").unwrap()];
        let setup = settings(
            &Config {
                registries_conf: RegistriesConfConfig {
                    enabled: false,
                    ..RegistriesConfConfig::default()
                },
                ..from_yaml
            },
            Path::new("/"),
            &[],
            &cli,
        )
        .unwrap();
        let names: Vec<&str> = setup
            .component_rules
            .iter()
            .map(|r| r.component.as_str())
            .collect();
        assert_eq!(names, ["mco", "machine-config-daemon", "mirror-job"]);
    }

    #[test]
    fn component_rule_mistakes_name_file_line_and_field() {
        let yaml = "component_rules:\n  - match: {unit: crio.service}\n    component: crio\n  - match: {}\n    component: everything\n";
        let err = parse(Path::new("/etc/ro.yaml"), yaml).unwrap_err();
        assert_eq!(err.0.line, Some(4), "{err}");
        assert_eq!(err.0.field.as_deref(), Some("component_rules[1]"), "{err}");
        assert!(
            err.to_string().contains("at least one of `namespace`"),
            "{err}"
        );

        let yaml = "component_rules:\n  - match: {namespaces: x}\n    component: y\n";
        let err = parse(Path::new("c.yaml"), yaml).unwrap_err();
        assert_eq!(err.0.line, Some(2), "{err}");
        assert!(
            err.to_string().contains("unknown field `namespaces`"),
            "{err}"
        );

        let toml = "[[component_rules]]\ncomponent = \"\"\nmatch = { unit = \"crio.service\" }\n";
        let err = parse(Path::new("c.toml"), toml).unwrap_err();
        assert_eq!(err.0.line, Some(1), "{err}");
        assert!(err.to_string().contains("non-empty `component`"), "{err}");
    }

    #[test]
    fn setup_orders_sources_and_imports_registries_conf() {
        let dir = std::env::temp_dir().join(format!("config-setup-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        let conf = dir.join("registries.conf");
        std::fs::write(
            &conf,
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"mirror.corp.example\"\n",
        )
        .unwrap();
        let yaml = format!(
            "catalog:\n  entries:\n    - pattern: mirror.corp.example\n      category: blob-storage\n    - cidr: 198.18.9.0/24\nregistries_conf:\n  file: {}\n  dir: {}/d\n",
            conf.display(),
            dir.display()
        );
        let config = parse(Path::new("c.yaml"), &yaml).unwrap();
        let setup = settings(
            &config,
            Path::new("/"),
            &[Pattern::parse("registry.example.test").unwrap()],
            &[],
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let setup = setup.unwrap();
        let catalog = &setup.catalog;
        // The config's entry came first: its category and source stay.
        let mirror = catalog.lookup("mirror.corp.example").unwrap();
        assert_eq!(
            (mirror.category, mirror.source),
            (Category::BlobStorage, Source::Config)
        );
        assert!(catalog.lookup("quay.io").unwrap().mirrored);
        assert_eq!(
            catalog.lookup("registry.example.test").unwrap().source,
            Source::CommandLine
        );
        assert!(
            catalog
                .lookup_address(&"198.18.9.1".parse().unwrap())
                .is_some()
        );
        assert_eq!(setup.registries_conf.unwrap().files, [conf]);

        // A named registries.conf that is missing stops the run.
        let yaml = "registries_conf:\n  file: /nonexistent/registries.conf\n";
        let config = parse(Path::new("c.yaml"), yaml).unwrap();
        let err = super::settings(&config, Path::new("/"), &[], &[]).unwrap_err();
        let SettingsError::RegistriesConf(file_error) = &err;
        assert_eq!(file_error.file, Path::new("/nonexistent/registries.conf"));
        let err = err.to_string();
        assert!(
            err.starts_with(
                "registries.conf error: /nonexistent/registries.conf: cannot read it ("
            ),
            "{err}"
        );
        assert!(!err.ends_with("containers-registries.conf(5)"), "{err}");
        // A problem without its own fix gets the manual page.
        let bare = SettingsError::RegistriesConf(FileError::whole("r.conf", "bad"));
        assert_eq!(
            bare.to_string(),
            "registries.conf error: r.conf: bad; see containers-registries.conf(5)"
        );
        // Turned off: not read at all.
        let config = parse(
            Path::new("c.yaml"),
            "registries_conf:\n  enabled: false\n  file: /nonexistent/x\n",
        )
        .unwrap();
        assert!(
            super::settings(&config, Path::new("/"), &[], &[])
                .unwrap()
                .registries_conf
                .is_none()
        );
    }
}
