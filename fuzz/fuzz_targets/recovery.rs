//! Log recovery from arbitrary bytes: a shard opened on a directory whose
//! segment and snapshot files the input decides.
//!
//! Input: one byte of flags, then
//! - bit 0 set (raw): `u16 len`, that many bytes as the snapshot file at LSN
//!   1 (none if 0), the rest as the first segment: the log's parsers on
//!   bytes whose checksums almost never hold;
//! - bit 0 clear (structured): operations (`harbour_fuzz::op`) written
//!   through the log's own API, so checksums hold and replay through the
//!   engine is reached: records (commands the model engine takes), group
//!   commits (LINK_IN and MULTI only if the switch could make them), snapshots of the model's state or of raw bytes, and damage
//!   to the newest segment. Bit 1: shard 0 of 2 (links live).
//!
//! Checked: `Shard::open` returns a shard or an error, never panics; a
//! recovered engine passes the audit; and with nothing damaged and no raw
//! snapshot, recovery succeeds with exactly the model's state.
#![no_main]

use std::sync::Arc;

use harbour::clock::Clock;
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::kinds;
use harbour::shard::{Shard, SwitchConfig};
use harbour::wal::storage::{MemStorage, Storage};
use harbour::wal::{Preallocate, Wal, WalConfig};
use harbour_fuzz::{COMMANDS_MAX, Reader, op, switch_could_send};
use libfuzzer_sys::fuzz_target;

fn config(flags: u8) -> SwitchConfig {
    let shards = if flags & 2 == 0 { 1 } else { 2 };
    let engine = EngineConfig {
        accounts_capacity: 16,
        transfers_capacity: 16,
        loans_capacity: 16,
        pending_capacity: 16,
        manual_clock: true,
        shard: 0,
        shards,
        ..EngineConfig::default()
    };
    SwitchConfig {
        engine,
        clock: Clock::Manual,
        // Small segments: rolls happen within one input.
        wal: WalConfig { segment_bytes_max: 4096, preallocate: Preallocate::Off },
        snapshot_in_background: false,
        ..SwitchConfig::default()
    }
}

/// The newest segment's name.
fn newest_segment(storage: &MemStorage) -> Option<String> {
    let names = storage.list().ok()?;
    names.into_iter().filter(|n| n.starts_with("wal-") && n.ends_with(".log")).max()
}

/// Writes the log the operations describe; returns whether recovery must
/// reproduce `model` exactly.
fn write_log(storage: &MemStorage, config: &SwitchConfig, input: &mut Reader, model: &mut Engine) -> bool {
    let opened = Wal::open(Arc::new(storage.clone()), config.wal, |_, _| Ok(()), |_| Ok(()));
    let (mut wal, _) = opened.expect("a new log opens in memory");
    let mut exact = true;
    let mut now_ms = MANUAL_CLOCK_START_MS;
    let mut out = Vec::new();
    for _ in 0..COMMANDS_MAX {
        let Some(next) = input.u8() else { break };
        match next % 8 {
            op::COMMIT => wal.commit().expect("commits in memory"),
            op::SNAPSHOT | op::RAW_SNAPSHOT => {
                wal.commit().expect("commits in memory");
                let mut state = Vec::new();
                if next % 8 == op::SNAPSHOT {
                    model.encode_state(&mut state);
                } else {
                    let len = input.u16().unwrap_or(0);
                    state.extend_from_slice(input.take(usize::from(len)).unwrap_or(&[]));
                    exact = false;
                }
                wal.write_snapshot(&state).expect("snapshots in memory");
            }
            op::DAMAGE => {
                let (Some(offset), Some(xor)) = (input.u32(), input.u8()) else { break };
                wal.commit().expect("commits in memory");
                let Some(name) = newest_segment(storage) else { continue };
                let len = storage.contents(&name).map_or(0, |b| b.len() as u64);
                if len == 0 {
                    continue;
                }
                let at = u64::from(offset) % len;
                let mut file = storage.open(&name, false).expect("listed");
                if xor == 0 {
                    file.truncate(at).expect("cuts in memory");
                } else {
                    let mut byte = [0u8];
                    file.read_at(&mut byte, at).expect("reads in memory");
                    file.write_at(&[byte[0] ^ xor], at).expect("writes in memory");
                }
                exact = false;
            }
            _ => {
                let Some(c) = input.command() else { break };
                now_ms = now_ms.saturating_add(u64::from(c.advance_ms));
                out.clear();
                // Only what the engine takes is logged, as the shard does.
                if switch_could_send(model, c.kind, c.body)
                    && kinds::is_logged(c.kind)
                    && model.apply(c.kind, c.body, now_ms, &mut out).is_ok()
                {
                    wal.append(c.kind, now_ms, c.body).expect("appends in memory");
                }
            }
        }
    }
    wal.commit().expect("commits in memory");
    exact
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader { bytes: data };
    let Some(flags) = input.u8() else { return };
    let config = config(flags);
    let storage = MemStorage::new();
    let mut expected = None;
    if flags & 1 != 0 {
        let len = input.u16().unwrap_or(0);
        let snapshot = input.take(usize::from(len)).unwrap_or(&[]);
        let write = |name: &str, bytes: &[u8]| {
            storage.open(name, true).and_then(|mut f| f.write_at(bytes, 0)).expect("writes in memory");
        };
        if !snapshot.is_empty() {
            write("snap-00000000000000000001.snap", snapshot);
        }
        write("wal-00000000000000000001.log", input.bytes);
    } else {
        let mut model = Engine::new(config.engine, MANUAL_CLOCK_START_MS);
        if write_log(&storage, &config, &mut input, &mut model) {
            expected = Some(model.state_hash());
        }
    }
    match Shard::open(Arc::new(storage), &config) {
        Ok((shard, _)) => {
            if let Err(e) = shard.engine().audit() {
                panic!("a recovered engine fails the audit: {e}");
            }
            if let Some(hash) = expected {
                assert_eq!(shard.engine().state_hash(), hash, "recovery reproduces the logged state");
            }
        }
        Err(e) => assert!(expected.is_none(), "an undamaged log fails to open: {e}"),
    }
});
