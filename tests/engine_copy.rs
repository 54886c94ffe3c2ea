//! The engine's snapshot copy: `clone_from` (which reuses the previous
//! copy's memory) against `clone`.

use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};

/// `clone_from` (the snapshot copy, which reuses the previous copy's
/// memory) must give what `clone` gives, for the engine and every part of
/// it: a copy made into an engine holding other state encodes to the same
/// snapshot bytes as a fresh clone, and keeps behaving the same.
#[test]
fn clone_from_gives_what_clone_gives() {
    let config = EngineConfig { manual_clock: true, ..EngineConfig::default() };
    let run = |seed: u64, requests: usize| {
        let mut e = Engine::new(config, MANUAL_CLOCK_START_MS);
        let mut out = Vec::new();
        for (kind, body) in harbour::sim::workload(seed, requests) {
            out.clear();
            let _ = e.apply(kind, &body, MANUAL_CLOCK_START_MS, &mut out);
        }
        e
    };
    let snapshot = |e: &Engine| {
        let mut out = Vec::new();
        e.encode_state(&mut out);
        out
    };
    let source = run(7, 120);
    let stored = source.stored_ids();
    assert!(stored.ids.len() > 50 && !stored.repayments.is_empty(), "a rich state: transfers, loans, repayments");
    // Into an empty engine, and into one holding a different, larger state
    // (a field left out would keep that state's value).
    for mut copy in [Engine::new(config, 0), run(11, 200)] {
        copy.clone_from(&source);
        assert!(snapshot(&copy) == snapshot(&source.clone()), "clone_from and clone encode alike");
        let (mut a, mut b) = (source.clone(), copy);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        for (kind, body) in harbour::sim::workload(13, 60).into_iter().skip(4) {
            let ra = a.apply(kind, &body, MANUAL_CLOCK_START_MS, &mut out_a);
            let rb = b.apply(kind, &body, MANUAL_CLOCK_START_MS, &mut out_b);
            assert_eq!(ra, rb);
        }
        assert_eq!(out_a, out_b, "and answer alike afterwards");
    }
}
