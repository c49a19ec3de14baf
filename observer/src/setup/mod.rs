//! Before anything is attached: the `--config` file turned into the
//! pipeline's settings (`config`), and the machine's fitness checked
//! (`preflight`: privileges, cgroup2, kernel), each failure one sentence a
//! person can act on.

pub mod config;
pub mod preflight;
