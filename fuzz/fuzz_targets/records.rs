//! Every request kind's body, arbitrary, through the checks the switch makes
//! before the engine and into a small engine.
//!
//! Input: one byte of configuration (bit 0: shard 0 of 2, so LINK_IN and
//! the links are live), then commands (`harbour_fuzz::Reader::command`).
//! A channel's kind must pass the server's well-formedness check first (a
//! MALFORMED answer otherwise); then `Engine::check_length`, the shard's.
//! Checked, for every command:
//! - refused by `check_length` ⇒ `apply` refuses it too and nothing
//!   changes (not even the clock);
//! - accepted ⇒ `apply` succeeds, every answer's result code is one the
//!   contract defines, and the audit holds;
//! - a kind that is not logged changes nothing (the clock was moved
//!   before it, as the shard moves it before each group).
//!
//! And for the whole input: replaying the accepted commands into a fresh
//! engine gives the same state (determinism), and the state survives a
//! snapshot round trip.
#![no_main]

use harbour::engine::{Engine, EngineConfig};
use harbour::protocol::kinds::{self, Origin};
use harbour::protocol::{ResultCode, kind};
use harbour_fuzz::{COMMANDS_MAX, Reader, switch_could_send};
use libfuzzer_sys::fuzz_target;

const START_MS: u64 = 1_000_000;

fn config(flags: u8) -> EngineConfig {
    let shards = if flags & 1 == 0 { 1 } else { 2 };
    EngineConfig {
        accounts_capacity: 16,
        transfers_capacity: 16,
        loans_capacity: 16,
        pending_capacity: 16,
        manual_clock: true,
        shard: 0,
        shards,
        ..EngineConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader { bytes: data };
    let Some(flags) = input.u8() else { return };
    let config = config(flags);
    let mut engine = Engine::new(config, START_MS);
    let mut now_ms = START_MS;
    let mut accepted = Vec::new();
    let mut out = Vec::new();
    for _ in 0..COMMANDS_MAX {
        let Some(c) = input.command() else { break };
        now_ms = now_ms.saturating_add(u64::from(c.advance_ms));
        let spec = kinds::spec(c.kind);
        if spec.is_some_and(|s| s.origin == Origin::Channel && !(s.well_formed)(c.body)) {
            continue; // The server answers MALFORMED; the engine never sees it.
        }
        // The shard moves the clock before a group and logs a TICK if
        // timers fired, so replay fires them at the same time.
        if engine.advance(now_ms) > 0 {
            accepted.push((kind::TICK, &[][..], now_ms));
        }
        if !switch_could_send(&engine, c.kind, c.body) {
            continue; // The switch's own bug, which the engine asserts against.
        }
        out.clear();
        if let Err(refused) = Engine::check_length(c.kind, c.body) {
            let before = engine.state_hash();
            assert_eq!(engine.apply(c.kind, c.body, now_ms, &mut out), Err(refused));
            assert!(out.is_empty(), "no answer to a refused command");
            assert_eq!(engine.state_hash(), before, "a refused command changes nothing");
            continue;
        }
        let logged = kinds::is_logged(c.kind);
        let before = (!logged).then(|| engine.state_hash());
        engine.apply(c.kind, c.body, now_ms, &mut out).expect("a body check_length accepts applies");
        if let Some(codes) = kinds::result_codes(c.kind, &out) {
            for code in codes {
                assert!(ResultCode::from_u16(code).is_some(), "result code {code} of kind {:#06x}", c.kind);
            }
        }
        if let Err(e) = engine.audit() {
            panic!("audit after kind {:#06x}: {e}", c.kind);
        }
        if let Some(before) = before {
            assert_eq!(engine.state_hash(), before, "kind {:#06x} is not logged: it changes nothing", c.kind);
        }
        if logged {
            accepted.push((c.kind, c.body, now_ms));
        }
    }

    // Replay of what would have been logged reproduces the state.
    let mut replayed = Engine::new(config, START_MS);
    for &(kind, body, at_ms) in &accepted {
        replayed.apply(kind, body, at_ms, &mut out).expect("replay applies what applied");
    }
    replayed.advance(now_ms);
    let mut live = engine;
    live.advance(now_ms);
    assert_eq!(replayed.state_hash(), live.state_hash(), "replay of the logged commands");

    let mut state = Vec::new();
    live.encode_state(&mut state);
    let restored = Engine::decode_state(config, &state).expect("a state's own encoding decodes");
    assert_eq!(restored.state_hash(), live.state_hash(), "snapshot round trip");
});
