//! Where people and tools talk to a running agent: the control socket
//! (`socket`, `registry-observer mark`) and the HTTP endpoint (`http`:
//! metrics, health, readiness, phases, report snapshots).

pub mod http;
pub mod socket;
