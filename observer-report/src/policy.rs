//! The `policy` and `registries_conf` sections: the policy in force, what
//! each allow entry did, and what registries.conf said.

use serde::{Deserialize, Serialize};

/// The report's `policy` section: the policy in force and what each allow
/// entry did, so expired entries and unused ones are visible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub enforce_phases: Vec<String>,
    pub allow: Vec<AllowReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllowReport {
    pub component: Option<String>,
    pub unit: Option<String>,
    pub namespace: Option<String>,
    pub host: Option<String>,
    pub reason: String,
    pub link: Option<String>,
    pub expires: Option<String>,
    /// Expired when the report was written.
    pub expired: bool,
    /// Attempts this entry allowed.
    pub allowed_attempts: usize,
    /// Attempts it matched after it had expired: violations now.
    pub matched_after_expiry: usize,
}

/// The report's `registries_conf` section: what was read, so a
/// `mirror_fallback` attempt can be traced to the mirror configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistriesConfReport {
    pub files: Vec<String>,
    pub mirrored: Vec<MirroredSource>,
    pub blocked: Vec<String>,
    pub unqualified_search: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredSource {
    pub prefix: String,
    pub location: String,
    pub mirrors: Vec<String>,
    pub mirror_by_digest_only: bool,
}
