//! Engine snapshot decoding on arbitrary bytes.
//!
//! Input: one byte of configuration (bit 0: shard 0 of 2, bit 1: shard 1
//! of 2, else shard 0 of 1), then the state bytes. Checked: decoding
//! returns an error or an engine that passes the audit; a decoded engine's
//! encoding decodes to the same state and encodes to itself (canonical);
//! and it takes a command afterwards (a TICK an hour on) with the audit
//! still holding.
#![no_main]

use harbour::engine::{Engine, EngineConfig};
use harbour::protocol::kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, state)) = data.split_first() else { return };
    let (shard, shards) = match flags & 3 {
        1 => (0, 2),
        2 | 3 => (1, 2),
        _ => (0, 1),
    };
    let config = EngineConfig {
        accounts_capacity: 16,
        transfers_capacity: 16,
        loans_capacity: 16,
        pending_capacity: 16,
        manual_clock: flags & 4 != 0,
        shard,
        shards,
        ..EngineConfig::default()
    };
    let Ok(mut engine) = Engine::decode_state(config, state) else { return };
    if let Err(e) = engine.audit() {
        panic!("a decoded state fails the audit: {e}");
    }
    let mut encoded = Vec::new();
    engine.encode_state(&mut encoded);
    let again = Engine::decode_state(config, &encoded).expect("an encoded state decodes");
    let mut encoded_again = Vec::new();
    again.encode_state(&mut encoded_again);
    assert_eq!(encoded, encoded_again, "the encoding of a decoded state is canonical");
    let mut out = Vec::new();
    let later = engine.now_ms().saturating_add(3_600_000);
    engine.apply(kind::TICK, &[], later, &mut out).expect("a TICK applies");
    if let Err(e) = engine.audit() {
        panic!("a decoded state fails the audit an hour on: {e}");
    }
});
