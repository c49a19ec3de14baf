//! The kernel side, as seen from user space: `load` opens, checks and
//! attaches the eBPF programs (with the struct offsets this kernel needs and
//! the verifier's refusals explained); `read` drains their ring buffer into
//! the pipeline's queue and reads their counters.
//!
//! First in the import order: nothing here knows the pipeline's types.

pub mod load;
pub mod read;
