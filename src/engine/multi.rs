//! Requests that span shards, applied entirely or not at all across a
//! crash (contract §6).
//!
//! Each shard has its own log, so the parts of one request become durable
//! at different moments; a crash between two fsyncs would leave a request
//! half applied. So a request whose records go to several shards reaches
//! each of them as one MULTI record: the shard's own part, which it
//! applies, and every other shard's part, which it keeps (`retained`)
//! until the router says the whole request is durable everywhere (the
//! `complete` mark every later MULTI carries). The router numbers these
//! requests (`seq`) and each shard receives them in that order. After a
//! restart, a shard that lacks a request (its part was in the lost tail
//! of its log) is given its part from another shard's retained copy
//! ([`reconcile`]) before it takes any traffic: if one part of a request
//! survived anywhere, every part is applied.
//!
//! Pure: no I/O. Record layout (all little-endian):
//!
//! | off | type | field |
//! |---|---|---|
//! | 0 | u64 | seq: the request's number, from 1 |
//! | 8 | u64 | complete: every request up to here is durable on every shard |
//! | 16 | u16 | mine_kind: the kind of this shard's part |
//! | 18 | u16 | parts_kind: the kind of the other parts |
//! | 20 | u32 | mine_len |
//! | 24 | u32 | parts: how many other parts follow |
//! | 28 | u32 | reserved (0) |
//! | 32 | | mine_len bytes, then per other part: u16 shard, u16 reserved, u32 len, len bytes |

use std::collections::VecDeque;

/// Bytes of a MULTI record's header.
pub const MULTI_HEADER_SIZE: usize = 32;
/// Bytes before each other part's body.
const PART_HEADER_SIZE: usize = 8;

/// A decoded MULTI record.
#[derive(Debug, PartialEq, Eq)]
pub struct MultiRecord<'a> {
    pub seq: u64,
    pub complete: u64,
    pub mine_kind: u16,
    pub mine: &'a [u8],
    pub parts_kind: u16,
    /// The other parts' section, as logged (see [`parts`]).
    pub parts_raw: &'a [u8],
}

/// Writes a MULTI record.
pub fn encode(
    seq: u64,
    complete: u64,
    mine_kind: u16,
    mine: &[u8],
    parts_kind: u16,
    parts: &[(u16, &[u8])],
    out: &mut Vec<u8>,
) {
    let others: usize = parts.iter().map(|(_, b)| PART_HEADER_SIZE + b.len()).sum();
    out.reserve(MULTI_HEADER_SIZE + mine.len() + others);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&complete.to_le_bytes());
    out.extend_from_slice(&mine_kind.to_le_bytes());
    out.extend_from_slice(&parts_kind.to_le_bytes());
    out.extend_from_slice(&u32::try_from(mine.len()).expect("a part fits a record").to_le_bytes());
    out.extend_from_slice(&u32::try_from(parts.len()).expect("at most SHARDS_MAX parts").to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(mine);
    for (shard, body) in parts {
        out.extend_from_slice(&shard.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&u32::try_from(body.len()).expect("a part fits a record").to_le_bytes());
        out.extend_from_slice(body);
    }
}

/// Reads a MULTI record; `None` if it is not one (lengths that do not add
/// up, reserved bytes set, a sequence of 0).
#[must_use]
pub fn decode(body: &[u8]) -> Option<MultiRecord<'_>> {
    let header = body.get(..MULTI_HEADER_SIZE)?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let u16_at = |at: usize| u16::from_le_bytes(header[at..at + 2].try_into().expect("2 bytes"));
    let (seq, complete) = (u64_at(0), u64_at(8));
    let mine_len = u32_at(20) as usize;
    let count = u32_at(24) as usize;
    if seq == 0 || u32_at(28) != 0 || complete >= seq {
        return None;
    }
    let mine = body.get(MULTI_HEADER_SIZE..MULTI_HEADER_SIZE.checked_add(mine_len)?)?;
    let parts_raw = &body[MULTI_HEADER_SIZE + mine_len..];
    let record = MultiRecord { seq, complete, mine_kind: u16_at(16), mine, parts_kind: u16_at(18), parts_raw };
    (parts(parts_raw)?.len() == count).then_some(record)
}

/// The other parts of a MULTI record's parts section: (shard, body).
#[must_use]
pub fn parts(mut raw: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let header = raw.get(..PART_HEADER_SIZE)?;
        let shard = u16::from_le_bytes([header[0], header[1]]);
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        if header[2..4] != [0, 0] {
            return None;
        }
        let body = raw.get(PART_HEADER_SIZE..PART_HEADER_SIZE.checked_add(len)?)?;
        out.push((shard, body));
        raw = &raw[PART_HEADER_SIZE + len..];
    }
    Some(out)
}

/// Other shards' parts of one request, kept until it is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    pub seq: u64,
    /// The parts' kind.
    pub kind: u16,
    /// The parts section as logged (`parts` reads it).
    pub raw: Vec<u8>,
}

/// What a shard knows of requests spanning shards: engine state, in
/// snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multi {
    /// The highest request sequence this shard applied its part of.
    pub applied: u64,
    /// Other shards' parts of the requests not yet known complete, in
    /// sequence order.
    pub retained: VecDeque<Retained>,
}

impl Multi {
    /// Records that this shard applied request `m` (its part): keeps the
    /// other parts, drops what the router says is complete.
    pub fn applied(&mut self, m: &MultiRecord) {
        assert!(m.seq > self.applied, "requests spanning shards arrive in sequence ({} after {})", m.seq, self.applied);
        self.applied = m.seq;
        if !m.parts_raw.is_empty() {
            self.retained.push_back(Retained { seq: m.seq, kind: m.parts_kind, raw: m.parts_raw.to_vec() });
        }
        while self.retained.front().is_some_and(|r| r.seq <= m.complete) {
            self.retained.pop_front();
        }
    }

    /// Copies `source` reusing this one's memory where it can.
    pub fn clone_from_state(&mut self, source: &Self) {
        self.applied = source.applied;
        self.retained.clone_from(&source.retained);
    }
}

/// After a restart: per shard, the MULTI records it must apply (in order)
/// so that every request any shard applied part of is applied on every
/// shard it names. `shards[s]` is shard `s`'s state.
#[must_use]
pub fn reconcile(shards: &[&Multi]) -> Vec<Vec<Vec<u8>>> {
    let mut missing: Vec<std::collections::BTreeMap<u64, (u16, Vec<u8>)>> = vec![Default::default(); shards.len()];
    for multi in shards {
        for r in &multi.retained {
            for (shard, body) in parts(&r.raw).expect("retained parts were decoded when applied") {
                let y = usize::from(shard);
                if shards[y].applied < r.seq {
                    missing[y].entry(r.seq).or_insert_with(|| (r.kind, body.to_vec()));
                }
            }
        }
    }
    missing
        .into_iter()
        .map(|requests| {
            requests
                .into_iter()
                .map(|(seq, (kind, body))| {
                    let mut out = Vec::new();
                    encode(seq, 0, kind, &body, kind, &[], &mut out);
                    out
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_bad_ones_do_not_decode() {
        let mut out = Vec::new();
        encode(7, 5, 0x11, b"mine", 0x11, &[(1, b"one"), (3, b"")], &mut out);
        let m = decode(&out).expect("decodes");
        assert_eq!((m.seq, m.complete, m.mine_kind, m.mine, m.parts_kind), (7, 5, 0x11, &b"mine"[..], 0x11));
        assert_eq!(parts(m.parts_raw).unwrap(), vec![(1, &b"one"[..]), (3, &b""[..])]);
        assert!(decode(&out[..out.len() - 1]).is_none(), "truncated");
        let mut reserved = out.clone();
        reserved[28] = 1;
        assert!(decode(&reserved).is_none(), "reserved bytes");
        let mut complete = Vec::new();
        encode(3, 3, 0x11, b"", 0x11, &[], &mut complete);
        assert!(decode(&complete).is_none(), "complete must be below seq");
    }

    #[test]
    fn a_shard_missing_a_request_gets_its_part_from_whoever_kept_it() {
        let mut a = Multi::default();
        let mut b = Multi::default();
        let mut c = Multi::default();
        // Request 1 on a and b (b lost it), request 2 on a and c (both
        // have it), request 3 on b and c (c lost it).
        let mut r1 = Vec::new();
        encode(1, 0, 0x11, b"a1", 0x11, &[(1, b"b1")], &mut r1);
        a.applied(&decode(&r1).unwrap());
        let mut r2 = Vec::new();
        encode(2, 0, 0x11, b"a2", 0x11, &[(2, b"c2")], &mut r2);
        a.applied(&decode(&r2).unwrap());
        let mut r2c = Vec::new();
        encode(2, 0, 0x11, b"c2", 0x11, &[(0, b"a2")], &mut r2c);
        c.applied(&decode(&r2c).unwrap());
        let mut r3 = Vec::new();
        encode(3, 0, 0x11, b"b3", 0x11, &[(2, b"c3")], &mut r3);
        b.applied(&decode(&r3).unwrap());
        b.applied = 0; // as if b's copy of 1 were lost: b applied neither
        let due = reconcile(&[&a, &b, &c]);
        assert!(due[0].is_empty());
        let mine = |body: &Vec<u8>| decode(body).map(|m| (m.seq, m.mine.to_vec())).unwrap();
        assert_eq!(due[1].iter().map(mine).collect::<Vec<_>>(), vec![(1, b"b1".to_vec())]);
        assert_eq!(due[2].iter().map(mine).collect::<Vec<_>>(), vec![(3, b"c3".to_vec())]);
        // A complete mark drops what is kept.
        let mut r4 = Vec::new();
        encode(4, 3, 0x11, b"a4", 0x11, &[], &mut r4);
        a.applied(&decode(&r4).unwrap());
        assert!(a.retained.is_empty());
    }
}
