//! The load tester's library: the workload generator, the replayer and the
//! closed-loop bench, and their reports. The `harbour-loadtest` binary is a
//! thin command line over it; tests drive it directly.

pub mod amlcurve;
pub mod cli;
pub mod failover;
pub mod flood;
pub mod plot;
pub mod report;
pub mod run;
pub mod sweep;
pub mod torture;
pub mod workload;
