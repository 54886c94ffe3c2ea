//! Links: what one shard owes the others, and what it has taken from them.
//!
//! A shard never touches another shard's books. When a transfer's credit
//! account lives on another shard, the debit shard reserves the money and
//! puts a CREDIT entry in its outbox to that shard; the credit shard applies
//! it and acknowledges; the acknowledgement posts the transfer on the debit
//! shard (see `docs/sharding.md`). The same outbox carries REFUND entries
//! (a credit that could not be applied: the debit shard voids the transfer),
//! ACCOUNT entries (a new account exists on its home shard, so other shards
//! may name it as a credit account) and QUOTE_SPENT entries (every shard
//! holds every FX quote; one spent on one shard is dropped on the others).
//!
//! Entries are numbered per link (sender → receiver) from 1 without gaps.
//! The receiver applies entry `seq` only if it is the next one it expects,
//! so a resent entry is applied once; it acknowledges the highest sequence
//! it has applied, and the sender drops entries up to there. Everything
//! here is engine state: created by logged commands, changed by logged
//! LINK_IN records, in snapshots. Which entries were *sent* is not: after a
//! restart a shard resends every unacknowledged entry.
//!
//! Pure: no I/O, no clock. Backpressure and shutdown are the shard's (it
//! sends at most `LINK_ENTRIES_MAX` entries per message).

use std::collections::VecDeque;

use crate::hash::IdBuildHasher;
use crate::holds::PendingEntry;

/// Bytes of one entry on the wire between shards and in the log.
pub const ENTRY_SIZE: usize = 48;
/// Bytes of a LINK_IN record's header (from shard, acknowledgement).
pub const LINK_HEADER_SIZE: usize = 16;
/// Most entries one LINK_IN record carries.
pub const LINK_ENTRIES_MAX: usize = 4096;
const _: () = assert!(LINK_HEADER_SIZE + LINK_ENTRIES_MAX * ENTRY_SIZE <= crate::protocol::internal::RECORD_BODY_MAX);

/// What an entry asks of its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// Credit `amount` of `currency` to `account` (on the receiver) for
    /// transfer `id`, from the receiver's part of INTERSHARD.
    Credit = 1,
    /// The credit of transfer `id` (on the receiver) could not be applied:
    /// void it. `amount` holds the sequence of the CREDIT it answers.
    Refund = 2,
    /// Account `account` exists on the sender (its home shard).
    Account = 3,
    /// FX quote `id` (every shard holds it) was spent on the sender.
    QuoteSpent = 4,
}

/// One entry of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    pub id: u128,
    pub account: u64,
    pub currency: u16,
    pub amount: u64,
    /// A CREDIT's sender, as its 40-bit `aml::mule::sender_key` (the mule
    /// rule's distinct senders on the payee's shard); 0 otherwise, and in
    /// entries written before the rule.
    pub sender: u64,
}

impl Entry {
    /// Appends the entry's 48 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.account.to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.currency.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.sender.to_le_bytes()[..5]);
    }

    /// Reads one entry; `None` for an unknown kind or reserved bytes set.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Entry> {
        assert_eq!(b.len(), ENTRY_SIZE, "entry size");
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let kind = match b[42] {
            1 => EntryKind::Credit,
            2 => EntryKind::Refund,
            3 => EntryKind::Account,
            4 => EntryKind::QuoteSpent,
            _ => return None,
        };
        let mut sender = [0; 8];
        sender[..5].copy_from_slice(&b[43..48]);
        if kind != EntryKind::Credit && sender != [0; 8] {
            return None;
        }
        Some(Entry {
            seq: u64_at(0),
            id: u128::from_le_bytes(b[8..24].try_into().expect("16 bytes")),
            account: u64_at(24),
            amount: u64_at(32),
            currency: u16::from_le_bytes([b[40], b[41]]),
            kind,
            sender: u64::from_le_bytes(sender),
        })
    }
}

/// A LINK_IN record: entries from shard `from`, and `from`'s
/// acknowledgement of what this shard sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkIn {
    pub from: u16,
    /// `from` has applied this shard's entries up to this sequence.
    pub ack: u64,
    pub entries: Vec<Entry>,
}

/// Encodes a LINK_IN body.
pub fn encode_link_in(from: u16, ack: u64, entries: &[Entry], out: &mut Vec<u8>) {
    assert!(entries.len() <= LINK_ENTRIES_MAX, "link message of {} entries", entries.len());
    out.reserve(LINK_HEADER_SIZE + entries.len() * ENTRY_SIZE);
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&ack.to_le_bytes());
    for e in entries {
        e.encode(out);
    }
}

/// Decodes a LINK_IN body; `None` if it is not one (length, reserved
/// bytes, an entry's kind, entries out of order).
#[must_use]
pub fn decode_link_in(body: &[u8]) -> Option<LinkIn> {
    if body.len() < LINK_HEADER_SIZE || !(body.len() - LINK_HEADER_SIZE).is_multiple_of(ENTRY_SIZE) {
        return None;
    }
    if body[2..8].iter().any(|&b| b != 0) {
        return None;
    }
    let from = u16::from_le_bytes([body[0], body[1]]);
    let ack = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let entries: Vec<Entry> =
        body[LINK_HEADER_SIZE..].chunks_exact(ENTRY_SIZE).map(Entry::decode).collect::<Option<_>>()?;
    if entries.len() > LINK_ENTRIES_MAX || entries.windows(2).any(|w| w[1].seq != w[0].seq + 1) {
        return None;
    }
    Some(LinkIn { from, ack, entries })
}

/// One direction pair between this shard and a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// The sequence of the last entry put in the outbox (0: none yet).
    pub last_seq: u64,
    /// Entries the peer has not acknowledged, in sequence order.
    pub outbox: VecDeque<Entry>,
    /// Beside each entry of the outbox: for a CREDIT, the transfer's place
    /// and AML timing while it is in flight (it is in no pending table
    /// then: posting on the acknowledgement needs no lookup); for other
    /// entries, `None`.
    pub flights: VecDeque<Option<PendingEntry>>,
    /// The highest sequence applied from the peer.
    pub applied: u64,
}

impl Link {
    /// The highest sequence the peer has acknowledged.
    #[must_use]
    pub fn acked(&self) -> u64 {
        self.outbox.front().map_or(self.last_seq, |e| e.seq - 1)
    }
}

/// Every link of a shard, and the accounts other shards own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// This shard's number.
    pub me: u16,
    /// One per shard (this shard's own stays empty).
    pub links: Vec<Link>,
    /// Customer accounts that exist on other shards (learnt from ACCOUNT
    /// entries). Membership only: never iterated to decide anything.
    pub remote: std::collections::HashSet<u64, IdBuildHasher>,
}

impl Links {
    /// The links of shard `me` of `shards`.
    #[must_use]
    pub fn new(me: u16, shards: u16) -> Self {
        assert!(me < shards, "shard {me} of {shards}");
        Links { me, links: vec![Link::default(); usize::from(shards)], remote: Default::default() }
    }

    /// Number of shards.
    #[must_use]
    pub fn shards(&self) -> u16 {
        self.links.len() as u16
    }

    /// Puts an entry in the outbox to `peer`, numbering it; returns its
    /// sequence.
    pub fn push(&mut self, peer: u16, kind: EntryKind, id: u128, account: u64, currency: u16, amount: u64) -> u64 {
        self.push_flight(peer, Entry { seq: 0, kind, id, account, currency, amount, sender: 0 }, None)
    }

    /// Puts the same entry in the outbox to every other shard.
    pub fn push_to_others(&mut self, kind: EntryKind, id: u128, account: u64) {
        let me = self.me;
        for peer in (0..self.shards()).filter(|&p| p != me) {
            self.push(peer, kind, id, account, 0, 0);
        }
    }

    /// Puts an entry (numbered here) in the outbox to `peer` with what the
    /// shard keeps beside it; returns its sequence.
    pub fn push_flight(&mut self, peer: u16, mut entry: Entry, flight: Option<PendingEntry>) -> u64 {
        assert_ne!(peer, self.me, "a shard has no link to itself");
        assert_eq!(flight.is_some(), entry.kind == EntryKind::Credit, "a flight beside each credit");
        let link = &mut self.links[usize::from(peer)];
        link.last_seq += 1;
        entry.seq = link.last_seq;
        link.outbox.push_back(entry);
        link.flights.push_back(flight);
        entry.seq
    }

    /// The flight of the unacknowledged CREDIT with sequence `seq` to
    /// `peer`.
    #[must_use]
    pub fn flight(&self, peer: u16, seq: u64) -> Option<(&Entry, PendingEntry)> {
        let link = &self.links[usize::from(peer)];
        let front = link.outbox.front()?.seq;
        let at = usize::try_from(seq.checked_sub(front)?).ok()?;
        Some((link.outbox.get(at)?, (*link.flights.get(at)?)?))
    }

    /// Drops the first entry of the link to `peer` if `ack` covers it,
    /// with its flight if it was a credit.
    pub fn pop_acknowledged(&mut self, peer: u16, ack: u64) -> Option<Option<PendingEntry>> {
        let link = &mut self.links[usize::from(peer)];
        assert!(ack <= link.last_seq, "shard {peer} acknowledges {ack} of {}", link.last_seq);
        link.outbox.front().filter(|e| e.seq <= ack)?;
        link.outbox.pop_front();
        Some(link.flights.pop_front().expect("a flight slot beside each entry"))
    }

    /// Whether any entry waits for an acknowledgement.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.links.iter().map(|l| l.outbox.len()).sum()
    }

    /// The entries of a message to `peer` holding entries after `sent`
    /// (at most `LINK_ENTRIES_MAX`), and the acknowledgement it may carry.
    ///
    /// The acknowledgement never covers a CREDIT whose REFUND is not in
    /// this message or an earlier one: the peer posts a transfer on seeing
    /// the acknowledgement, so it must see the refund first.
    #[must_use]
    pub fn message(&self, peer: u16, sent: u64) -> (u64, Vec<Entry>) {
        let link = &self.links[usize::from(peer)];
        let first = sent.max(link.acked());
        let skip = link.outbox.iter().take_while(|e| e.seq <= first).count();
        let entries: Vec<Entry> = link.outbox.iter().skip(skip).take(LINK_ENTRIES_MAX).copied().collect();
        let held_back = link
            .outbox
            .iter()
            .skip(skip + entries.len())
            .filter(|e| e.kind == EntryKind::Refund)
            .map(|e| e.amount - 1)
            .min();
        (held_back.map_or(link.applied, |h| h.min(link.applied)), entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_messages_round_trip() {
        let e = Entry {
            seq: 7,
            kind: EntryKind::Credit,
            id: 1 << 100 | 5,
            account: 4096,
            currency: 344,
            amount: 12_345,
            sender: (1 << 40) - 3,
        };
        let mut body = Vec::new();
        encode_link_in(3, 9, &[e, Entry { seq: 8, kind: EntryKind::Account, sender: 0, ..e }], &mut body);
        let decoded = decode_link_in(&body).expect("decodes");
        assert_eq!(decoded.from, 3);
        assert_eq!(decoded.ack, 9);
        assert_eq!(decoded.entries, vec![e, Entry { seq: 8, kind: EntryKind::Account, sender: 0, ..e }]);
    }

    #[test]
    fn malformed_link_records_are_refused() {
        let e = Entry { seq: 1, kind: EntryKind::Credit, id: 1, account: 4096, currency: 344, amount: 1, sender: 9 };
        let mut good = Vec::new();
        encode_link_in(0, 0, &[e], &mut good);
        let mut cases = Vec::new();
        cases.push(good[..good.len() - 1].to_vec());
        let mut bad_kind = good.clone();
        bad_kind[LINK_HEADER_SIZE + 42] = 9;
        cases.push(bad_kind);
        // Only a CREDIT names a sender.
        let mut reserved = Vec::new();
        encode_link_in(0, 0, &[Entry { kind: EntryKind::Account, sender: 0, ..e }], &mut reserved);
        reserved[LINK_HEADER_SIZE + 47] = 1;
        cases.push(reserved);
        let mut header = good.clone();
        header[3] = 1;
        cases.push(header);
        let mut gap = Vec::new();
        encode_link_in(0, 0, &[e, Entry { seq: 3, ..e }], &mut gap);
        cases.push(gap);
        for case in cases {
            assert_eq!(decode_link_in(&case), None);
        }
    }

    #[test]
    fn an_acknowledgement_waits_for_the_refunds_it_covers() {
        let mut links = Links::new(0, 2);
        links.links[1].applied = 10;
        for i in 0..LINK_ENTRIES_MAX + 2 {
            links.push(1, EntryKind::Account, 0, 1024 + i as u64, 0, 0);
        }
        // A refund of the peer's credit 6, beyond the first message.
        links.push(1, EntryKind::Refund, 77, 0, 0, 6);
        let (ack, entries) = links.message(1, 0);
        assert_eq!(entries.len(), LINK_ENTRIES_MAX);
        assert_eq!(ack, 5, "credit 6 is not acknowledged before its refund is sent");
        let (ack, entries) = links.message(1, LINK_ENTRIES_MAX as u64);
        assert_eq!(entries.len(), 3);
        assert_eq!(ack, 10);
        assert_eq!(links.links[1].acked(), 0);
    }
}
