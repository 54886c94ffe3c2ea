//! Where the switch's time comes from.
//!
//! The engine never reads a clock: the shard loop asks a [`Clock`] once per
//! group of requests, passes the time in with every command and writes it to
//! the log, so a replay sees the same time the first run saw.

use std::time::{SystemTime, UNIX_EPOCH};

/// The switch's time source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system's wall clock (production).
    #[default]
    System,
    /// Moves only by SET_TIME (tests); starts at 2026-01-01T00:00:00Z on a
    /// new data directory and resumes from the log on restart.
    Manual,
}

impl Clock {
    /// The time for the next group of commands, given the engine's current
    /// time (a manual clock stays where SET_TIME left it).
    #[must_use]
    pub fn now_ms(self, engine_now_ms: u64) -> u64 {
        match self {
            Clock::System => {
                let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                // A wall clock stepped backwards must not move time backwards.
                wall.max(engine_now_ms)
            }
            Clock::Manual => engine_now_ms,
        }
    }

    /// Whether SET_TIME is accepted.
    #[must_use]
    pub fn is_manual(self) -> bool {
        self == Clock::Manual
    }
}
