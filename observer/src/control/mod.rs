//! Where people and tools talk to a running agent: the control socket
//! (`socket`, `registry-observer mark`) and the HTTP endpoint (`http`:
//! metrics, health, readiness, phases, report snapshots), and systemd's
//! notify socket (`notify`: readiness and the watchdog).

pub mod http;
pub mod notify;
pub mod socket;
