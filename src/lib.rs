//! Harbour: a payment and transfer switch for Hong Kong virtual banks.
//!
//! See `ARCHITECTURE.md` for the map. In short: [`protocol`] owns the wire
//! format, [`engine`] is the pure per-shard state machine, [`wal`] makes its
//! commands durable, and [`shard`] runs one engine and its log per thread and
//! routes requests to them ([`shard::Switch`]).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![allow(missing_docs)] // Record fields are documented by the contract's tables.

/// The channel protocol and client live in their own crate, which is all a
/// channel needs; they are re-exported under their old paths.
pub use harbour_protocol as protocol;
pub use harbour_protocol::client;

/// The engine and its domain live in their own crate, which does no I/O;
/// re-exported under their old paths.
pub use harbour_engine as engine;
pub use harbour_engine::{aml, credit, fx, hash, money};

pub mod admission;
pub mod alloc;
pub mod audit;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod handoff;
pub mod host;
pub mod http;
pub mod metrics;
pub mod router;
pub mod scorer;
pub mod server;
pub mod shard;
pub mod show;
pub mod sim;
pub mod sync;
pub mod timeline;
pub mod tls;
pub mod top;
pub mod traffic;
pub mod wal;
