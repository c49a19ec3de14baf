//! One registry attempt: what was contacted, how we know, by whom, in which
//! phase, and the policy's verdict.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::{
    on_behalf_of::OnBehalfOf,
    process::{CgroupRef, Container, Pod, ProcessInfo},
    time::{parse_rfc3339, rfc3339},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRef {
    /// The catalog pattern that matched (`quay.io`, `*.gcr.io`).
    pub pattern: String,
    pub category: Category,
    pub source: Source,
    /// registries.conf blocks this registry: pulls are refused, yet the
    /// contact (a lookup, a connect()) still happened. Reports before the
    /// policy stage lack it: false.
    #[serde(default)]
    pub blocked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    pub ip: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Violation,
    Allowed,
    /// The attempt's phase is outside the policy's `enforce_phases`.
    NotEnforced,
}

/// Why an allowed attempt is allowed: the allowlist entry that matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    pub reason: String,
    pub link: Option<String>,
    /// Expiry date, `YYYY-MM-DD`, when the entry has one.
    pub expires: Option<String>,
}

/// What makes two registry events one attempt: the same phase, host,
/// catalog entry, cgroup and process image (comm, executable, argv). The
/// agent merges events by it, and a durable record restored after a
/// restart is merged into by it, so both must derive it the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub phase: String,
    pub host: Option<String>,
    /// Tells apart unnamed connects into different catalog CIDRs.
    pub registry: String,
    pub cgroup_id: u64,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<Vec<String>>,
}

impl AttemptKey {
    pub fn of(attempt: &Attempt) -> AttemptKey {
        AttemptKey {
            phase: attempt.phase.clone(),
            host: attempt.host.clone(),
            registry: attempt.registry.pattern.clone(),
            cgroup_id: attempt.cgroup.id,
            comm: attempt.process.comm.clone(),
            exe: attempt.process.exe.clone(),
            cmdline: attempt.process.cmdline.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub host: Option<String>,
    pub registry: RegistryRef,
    /// The first destination connected to; null for DNS-only attempts.
    pub dest: Option<Dest>,
    pub evidence: BTreeSet<Evidence>,
    pub process: ProcessInfo,
    pub cgroup: CgroupRef,
    pub unit: Option<String>,
    pub container: Option<Container>,
    pub pod: Option<Pod>,
    pub component: String,
    pub phase: String,
    pub verdict: Verdict,
    pub allowed_by: Option<Allowance>,
    /// The registry has mirrors in registries.conf: this contact to the
    /// source may be the fallback taken when the mirrors failed (OpenShift's
    /// default `AllowContactingSource`). The repository path is not visible
    /// on the wire, so "may": the mirrors may cover other repositories only.
    /// Reports before the policy stage lack it: false.
    #[serde(default)]
    pub mirror_fallback: bool,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "rfc3339", deserialize_with = "parse_rfc3339")]
    pub last_seen: SystemTime,
    /// Events merged into this attempt (each DNS query and connect()).
    pub count: u64,
    /// The node that saw it: set by `report merge` in a cluster report,
    /// absent in a node's own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How the contacts ended, counted: TCP handshakes (`established`,
    /// `refused`, `timed_out`, `unreachable`, `aborted`, `error_N`) and
    /// failed DNS answers (`dns_nxdomain`, `dns_servfail`, ...) and queries
    /// left unanswered (`dns_no_answer`).
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// For a container runtime or an image tool: the pod, unit or process
    /// it worked for, with evidence and confidence; null otherwise, or when
    /// nothing explains it. Decided at report time. Reports before it lack
    /// it: null.
    #[serde(default)]
    pub on_behalf_of: Option<OnBehalfOf>,
}

impl Attempt {
    /// The host name, or for a connect() into a catalog CIDR (no name seen)
    /// the range it matched: how summaries, JUnit and diffs name it.
    pub fn host_or_range(&self) -> String {
        self.host
            .clone()
            .unwrap_or_else(|| self.registry.pattern.clone())
    }
}

/// How we know an attempt happened. Names match the report schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The process sent a DNS query for a registry name.
    DnsQuery,
    /// A captured DNS answer tied the connect()'s address to the name.
    DnsAnswer,
    /// The process called connect() towards a registry address.
    Connect,
    /// The process sent a UDP datagram to a registry address (sendto()).
    Sendmsg,
    /// The TLS ClientHello named a registry (SNI).
    TlsSni,
    /// The process asked an HTTP proxy to CONNECT to a registry.
    HttpConnect,
    /// A plain HTTP request named a registry (Host or absolute URL).
    HttpHost,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::DnsQuery => "dns_query",
            Evidence::DnsAnswer => "dns_answer",
            Evidence::Connect => "connect",
            Evidence::Sendmsg => "sendmsg",
            Evidence::TlsSni => "tls_sni",
            Evidence::HttpConnect => "http_connect",
            Evidence::HttpHost => "http_host",
        }
    }
}

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
    /// `catalog.entries` in the `--config` file.
    Config,
    /// /etc/containers/registries.conf and registries.conf.d: registries,
    /// their mirrors, blocked registries, unqualified-search registries.
    RegistriesConf,
}
