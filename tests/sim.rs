//! The deterministic simulator of the whole switch (`harbour::sim`): N
//! shards, the router, links, crashes and restarts in one thread, checked
//! against the contract after every step and, one request at a time,
//! against a one-shard engine. `cargo run --release --bin harbour-sim --
//! --seeds 10000` runs more seeds than CI does.

use harbour::sim::{Plan, run_seed};

/// Seeds the simulator once failed, each kept with what it found (all
/// fixed): the plan a seed gets is `Plan::of_seed`.
const FOUND: [(u64, &str); 12] = [
    (50, "a repayment id reused for another shard's loan answered without that loan's state"),
    (1185, "a record saw a credit a later record of its request sent across shards"),
    (1875, "the same, with an AUTO_CREDIT draw"),
    (8051, "the same, four shards"),
    (1311, "a round numbered again after a restart was taken for an older one"),
    (942, "a complete mark after a restart also covers rounds lost everywhere"),
    (8015, "a request spanning shards applied on one shard only after a crash"),
    (571, "an id stored by a rolled-forward round was missing from the rebuilt claims"),
    (559, "the same, with requests in flight"),
    (766, "the same, three shards"),
    (2671, "the same, seven requests in flight"),
    (8495, "an id stored on two shards after a crash"),
];

#[test]
fn the_seeds_the_simulator_once_failed_pass() {
    for (seed, found) in FOUND {
        if let Err(failure) = run_seed(seed) {
            panic!("seed {seed} (once: {found}) fails again: {failure}");
        }
    }
}

/// A few hundred seeds: 1 to 4 shards, one request at a time (compared
/// with one shard) or several in flight, with and without power losses.
#[test]
fn three_hundred_seeds_keep_the_contract() {
    let mut crashes = 0;
    let mut rolled_forward = 0;
    let mut contended = 0;
    let mut ahead = 0;
    for seed in 0..300 {
        let report = run_seed(seed).unwrap_or_else(|failure| panic!("{failure}"));
        crashes += report.crashes;
        rolled_forward += report.rolled_forward;
        contended += report.contended;
        ahead += report.went_ahead;
    }
    // The seeds reach what they are for.
    assert!(crashes > 300, "{crashes} crashes");
    assert!(rolled_forward > 50, "{rolled_forward} parts rolled forward");
    assert!(contended > 50, "{contended} routings put off by claims");
    assert!(ahead > 50, "{ahead} records gone ahead of one left for a later round");
}

#[test]
fn a_seed_runs_the_same_every_time() {
    for seed in [3, 14, 15] {
        assert_eq!(run_seed(seed).unwrap(), run_seed(seed).unwrap(), "seed {seed}");
    }
}

#[test]
fn every_shard_count_and_mode_is_planned() {
    let plans: Vec<Plan> = (0..16).map(Plan::of_seed).collect();
    for shards in 1..=4 {
        for (concurrent, crashes) in [(false, false), (true, false), (false, true), (true, true)] {
            assert!(
                plans.iter().any(|p| p.shards == shards && (p.concurrency > 1) == concurrent && p.crashes == crashes),
                "{shards} shards, concurrent {concurrent}, crashes {crashes}"
            );
        }
    }
}
