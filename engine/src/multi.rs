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
//! Within a request, a later record sees the effects of earlier ones
//! (contract §3). When a record depends on one applied on another shard
//! (it debits an account an earlier record credits across shards), the
//! router sends the records before it as one round and the rest once that
//! round is answered. The round's MULTI records carry the rest, which
//! every shard of the round keeps until the router says the request is
//! complete; the next round's records name the round they continue. After
//! a restart, a rest whose continuation no shard applied is routed then
//! ([`continuations`]), so a request split in rounds is still applied
//! entirely or not at all.
//!
//! Pure: no I/O. Record layout (all little-endian):
//!
//! | off | type | field |
//! |---|---|---|
//! | 0 | u64 | seq: the round's number, from 1 |
//! | 8 | u64 | complete: every round up to here is durable on every shard it names, and so are its continuations |
//! | 16 | u64 | continues: the round this one continues (0: none) |
//! | 24 | u16 | mine_kind: the kind of this shard's part |
//! | 26 | u16 | parts_kind: the kind of the other parts and of the rest |
//! | 28 | u32 | mine_len |
//! | 32 | u32 | parts: how many other parts follow |
//! | 36 | u32 | rest_len: bytes of the request's records after this round |
//! | 40 | u64 | reserved (0) |
//! | 48 | | mine_len bytes; per other part: u16 shard, u16 reserved, u32 len, len bytes; then rest_len bytes |

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Bytes of a MULTI record's header.
pub const MULTI_HEADER_SIZE: usize = 48;
/// Bytes before each other part's body.
const PART_HEADER_SIZE: usize = 8;

/// A decoded MULTI record.
#[derive(Debug, PartialEq, Eq)]
pub struct MultiRecord<'a> {
    pub seq: u64,
    pub complete: u64,
    /// The round this one continues (0: none).
    pub continues: u64,
    pub mine_kind: u16,
    pub mine: &'a [u8],
    pub parts_kind: u16,
    /// The other parts' section, as logged (see [`parts`]).
    pub parts_raw: &'a [u8],
    /// The request's records after this round.
    pub rest: &'a [u8],
}

/// What a MULTI record says besides the parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub complete: u64,
    pub continues: u64,
}

/// Writes a MULTI record.
pub fn encode(
    h: Header,
    mine_kind: u16,
    mine: &[u8],
    parts_kind: u16,
    parts: &[(u16, &[u8])],
    rest: &[u8],
    out: &mut Vec<u8>,
) {
    let others: usize = parts.iter().map(|(_, b)| PART_HEADER_SIZE + b.len()).sum();
    let len = |n: usize| u32::try_from(n).expect("a part fits a record").to_le_bytes();
    out.reserve(MULTI_HEADER_SIZE + mine.len() + others + rest.len());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.complete.to_le_bytes());
    out.extend_from_slice(&h.continues.to_le_bytes());
    out.extend_from_slice(&mine_kind.to_le_bytes());
    out.extend_from_slice(&parts_kind.to_le_bytes());
    out.extend_from_slice(&len(mine.len()));
    out.extend_from_slice(&len(parts.len()));
    out.extend_from_slice(&len(rest.len()));
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(mine);
    for (shard, body) in parts {
        out.extend_from_slice(&shard.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&len(body.len()));
        out.extend_from_slice(body);
    }
    out.extend_from_slice(rest);
}

/// Reads a MULTI record; `None` if it is not one (lengths that do not add
/// up, reserved bytes set, a sequence of 0, marks not below it).
#[must_use]
pub fn decode(body: &[u8]) -> Option<MultiRecord<'_>> {
    let header = body.get(..MULTI_HEADER_SIZE)?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")) as usize;
    let u16_at = |at: usize| u16::from_le_bytes(header[at..at + 2].try_into().expect("2 bytes"));
    let (seq, complete, continues) = (u64_at(0), u64_at(8), u64_at(16));
    let (mine_len, count, rest_len) = (u32_at(28), u32_at(32), u32_at(36));
    if seq == 0 || u64_at(40) != 0 || complete >= seq || continues >= seq {
        return None;
    }
    let mine_end = MULTI_HEADER_SIZE.checked_add(mine_len)?;
    let mine = body.get(MULTI_HEADER_SIZE..mine_end)?;
    let rest_at = body.len().checked_sub(rest_len).filter(|&at| at >= mine_end)?;
    let parts_raw = &body[mine_end..rest_at];
    let record = MultiRecord {
        seq,
        complete,
        continues,
        mine_kind: u16_at(24),
        mine,
        parts_kind: u16_at(26),
        parts_raw,
        rest: &body[rest_at..],
    };
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

/// Other shards' parts of one round, and the request's rest, kept until
/// the round is complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    pub seq: u64,
    /// The parts' (and the rest's) kind.
    pub kind: u16,
    /// The parts section as logged (`parts` reads it).
    pub raw: Vec<u8>,
    /// The request's records after this round.
    pub rest: Vec<u8>,
}

/// What a shard knows of requests spanning shards: engine state, in
/// snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multi {
    /// The highest round this shard applied its part of.
    pub applied: u64,
    /// The highest complete mark it was given.
    pub complete: u64,
    /// Rounds above `complete` it applied its part of.
    pub recent: BTreeSet<u64>,
    /// Rounds above `complete` whose continuation it applied a part of.
    pub continued: BTreeSet<u64>,
    /// Other shards' parts (and the rest) of the rounds above `complete`,
    /// in order.
    pub retained: VecDeque<Retained>,
}

impl Multi {
    /// Records that this shard applied round `m` (its part): keeps the
    /// other parts and the rest, drops what the router says is complete.
    pub fn applied(&mut self, m: &MultiRecord) {
        assert!(m.seq > self.complete && !self.recent.contains(&m.seq), "round {} applied twice", m.seq);
        self.applied = self.applied.max(m.seq);
        self.recent.insert(m.seq);
        if m.continues != 0 {
            self.continued.insert(m.continues);
        }
        if !m.parts_raw.is_empty() || !m.rest.is_empty() {
            let r = Retained { seq: m.seq, kind: m.parts_kind, raw: m.parts_raw.to_vec(), rest: m.rest.to_vec() };
            let at = self.retained.partition_point(|x| x.seq < m.seq);
            self.retained.insert(at, r);
        }
        if m.complete > self.complete {
            self.complete = m.complete;
            let complete = self.complete;
            while self.retained.front().is_some_and(|r| r.seq <= complete) {
                self.retained.pop_front();
            }
            self.recent = self.recent.split_off(&(complete + 1));
            self.continued = self.continued.split_off(&(complete + 1));
        }
    }

    /// Whether this shard applied its part of round `seq`, if the round
    /// names it (a complete round was applied by every shard it names).
    #[must_use]
    pub fn has(&self, seq: u64) -> bool {
        seq <= self.complete || self.recent.contains(&seq)
    }

    /// Copies `source` reusing this one's memory where it can.
    pub fn clone_from_state(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { applied, complete, recent, continued, retained } = source;
        self.applied = *applied;
        self.complete = *complete;
        self.recent.clone_from(recent);
        self.continued.clone_from(continued);
        self.retained.clone_from(retained);
    }
}

/// After a restart: per shard, the MULTI records it must apply (in order)
/// so that every round any shard applied part of is applied on every shard
/// it names. `shards[s]` is shard `s`'s state.
#[must_use]
pub fn reconcile(shards: &[&Multi]) -> Vec<Vec<Vec<u8>>> {
    let mut missing: Vec<BTreeMap<u64, (u16, Vec<u8>)>> = vec![BTreeMap::new(); shards.len()];
    for multi in shards {
        for r in &multi.retained {
            for (shard, body) in parts(&r.raw).expect("retained parts were decoded when applied") {
                let y = usize::from(shard);
                if !shards[y].has(r.seq) {
                    missing[y].entry(r.seq).or_insert_with(|| (r.kind, body.to_vec()));
                }
            }
        }
    }
    missing
        .into_iter()
        .map(|rounds| {
            rounds
                .into_iter()
                .map(|(seq, (kind, body))| {
                    let mut out = Vec::new();
                    encode(Header { seq, ..Header::default() }, kind, &body, kind, &[], &[], &mut out);
                    out
                })
                .collect()
        })
        .collect()
}

/// After a restart (and [`reconcile`]): the rests no shard has begun
/// routing, as (round, kind, records), in round order: the switch routes
/// each as a continuation of its round before it takes traffic.
#[must_use]
pub fn continuations(shards: &[&Multi]) -> Vec<(u64, u16, Vec<u8>)> {
    let mut due = BTreeMap::new();
    for multi in shards {
        for r in multi.retained.iter().filter(|r| !r.rest.is_empty()) {
            if !shards.iter().any(|m| m.continued.contains(&r.seq)) {
                due.entry(r.seq).or_insert_with(|| (r.kind, r.rest.clone()));
            }
        }
    }
    due.into_iter().map(|(seq, (kind, rest))| (seq, kind, rest)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, complete: u64, continues: u64, mine: &[u8], parts: &[(u16, &[u8])], rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(Header { seq, complete, continues }, 0x11, mine, 0x11, parts, rest, &mut out);
        out
    }

    #[test]
    fn a_record_round_trips_and_bad_ones_do_not_decode() {
        let out = record(7, 5, 6, b"mine", &[(1, b"one"), (3, b"")], b"rest");
        let m = decode(&out).expect("decodes");
        assert_eq!((m.seq, m.complete, m.continues, m.mine, m.rest), (7, 5, 6, &b"mine"[..], &b"rest"[..]));
        assert_eq!(parts(m.parts_raw).unwrap(), vec![(1, &b"one"[..]), (3, &b""[..])]);
        assert!(decode(&out[..out.len() - 5]).is_none(), "truncated");
        let mut reserved = out.clone();
        reserved[40] = 1;
        assert!(decode(&reserved).is_none(), "reserved bytes");
        assert!(decode(&record(3, 3, 0, b"", &[], b"")).is_none(), "complete must be below seq");
        assert!(decode(&record(3, 0, 3, b"", &[], b"")).is_none(), "a round continues an earlier one");
    }

    #[test]
    fn a_shard_missing_a_round_gets_its_part_from_whoever_kept_it() {
        let (mut a, mut b, mut c) = (Multi::default(), Multi::default(), Multi::default());
        // Round 1 on a and b (b lost it), round 2 on a and c (both have
        // it), round 3 on b and c (c lost it), round 4 on a and c lost by
        // both: nobody can give it, nobody applied it.
        a.applied(&decode(&record(1, 0, 0, b"a1", &[(1, b"b1")], b"")).unwrap());
        a.applied(&decode(&record(2, 0, 0, b"a2", &[(2, b"c2")], b"")).unwrap());
        c.applied(&decode(&record(2, 0, 0, b"c2", &[(0, b"a2")], b"")).unwrap());
        b.applied(&decode(&record(3, 0, 0, b"b3", &[(2, b"c3")], b"")).unwrap());
        let due = reconcile(&[&a, &b, &c]);
        assert!(due[0].is_empty());
        let mine = |body: &Vec<u8>| decode(body).map(|m| (m.seq, m.mine.to_vec())).unwrap();
        assert_eq!(due[1].iter().map(mine).collect::<Vec<_>>(), vec![(1, b"b1".to_vec())]);
        assert_eq!(due[2].iter().map(mine).collect::<Vec<_>>(), vec![(3, b"c3".to_vec())]);
        assert!(a.has(1) && !b.has(1) && !a.has(4) && !c.has(4));
        // A complete mark drops what is kept and what is remembered.
        a.applied(&decode(&record(5, 3, 0, b"a5", &[], b"")).unwrap());
        assert!(a.retained.is_empty() && a.has(2) && a.recent.iter().copied().eq([5]));
    }

    #[test]
    fn a_rest_nobody_began_is_due_and_one_begun_is_not() {
        let (mut a, mut b) = (Multi::default(), Multi::default());
        a.applied(&decode(&record(1, 0, 0, b"a1", &[(1, b"b1")], b"rest1")).unwrap());
        b.applied(&decode(&record(1, 0, 0, b"b1", &[(0, b"a1")], b"rest1")).unwrap());
        assert_eq!(continuations(&[&a, &b]), vec![(1, 0x11, b"rest1".to_vec())]);
        // Round 2 continues round 1 on b only (a lost it): b's copy of it
        // is a's to apply; round 1's rest is begun.
        b.applied(&decode(&record(2, 0, 1, b"b2", &[(0, b"a2")], b"")).unwrap());
        assert!(continuations(&[&a, &b]).is_empty());
        assert_eq!(reconcile(&[&a, &b])[0].len(), 1);
    }
}
