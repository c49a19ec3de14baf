//! The agent's durable record (`run --state-dir DIR`): an append-only
//! spool of checksummed records in versioned segments (`segment`, pure),
//! the records and the state replayed from them (`record`, pure),
//! kept in a locked directory with checkpoints and a size bound (`spool`),
//! and the report a state dir holds (`build`).
//! No aya and no tokio, so `report build` reads a state dir without the
//! agent.

pub mod build;
pub mod record;
pub mod segment;
pub mod spool;
