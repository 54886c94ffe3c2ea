//! The synchronisation primitives the thread handoffs use: `std`'s, or
//! loom's when the `loom` feature is on, so `tests/loom.rs` can check every
//! interleaving of the handoffs in `handoff` (the habit of tokio's
//! `src/loom/`). Nothing else in the crate needs to know which.

#[cfg(feature = "loom")]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(feature = "loom"))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
