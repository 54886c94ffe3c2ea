//! The input formats the fuzz targets share with the seed generator, so a
//! seed is written by the same code that reads it.
//!
//! The `records` and `recovery` targets read a byte string as commands:
//! `u16 kind, u32 advance_ms, u16 body_len, body` (little-endian), the
//! kind raw so a seed does not depend on the order of the table of kinds.
//! A body shorter than its length ends the input.

/// Bytes before a command's body.
pub const COMMAND_HEADER_SIZE: usize = 8;
/// Commands one input may carry: the engine is rebuilt per input, so this
/// bounds the time of one execution.
pub const COMMANDS_MAX: usize = 64;

/// One command: a request of `kind` with `body`, applied `advance_ms` after
/// the one before.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a> {
    pub kind: u16,
    pub advance_ms: u32,
    pub body: &'a [u8],
}

/// Reads fields off the front of an input; `None` once it runs out.
pub struct Reader<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.bytes.split_at_checked(n)?;
        self.bytes = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// The next command.
    pub fn command(&mut self) -> Option<Command<'a>> {
        let kind = self.u16()?;
        let advance_ms = self.u32()?;
        let len = self.u16()?;
        let body = self.take(usize::from(len))?;
        Some(Command { kind, advance_ms, body })
    }
}

/// Appends a command in the format [`Reader::command`] reads.
pub fn push_command(out: &mut Vec<u8>, kind: u16, advance_ms: u32, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("a seed's body fits u16");
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&advance_ms.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

/// Operations of the `recovery` target's structured mode (the byte before
/// each; values 0..=3 are all a record, so most operations are).
pub mod op {
    /// Append a record (a command follows), if the model engine takes it.
    pub const RECORD: u8 = 0;
    /// Commit the records appended since the last commit (one group).
    pub const COMMIT: u8 = 4;
    /// Write a snapshot of the model engine's state.
    pub const SNAPSHOT: u8 = 5;
    /// Write a snapshot of raw bytes (`u16 len`, bytes follow).
    pub const RAW_SNAPSHOT: u8 = 6;
    /// Damage the newest segment (`u32 offset`, `u8 xor` follow): flip
    /// bits at `offset % len`, or cut the file there if `xor` is 0.
    pub const DAMAGE: u8 = 7;
}

/// Whether the switch itself could make a request of `kind` with `body`
/// for this engine: always, except for two records the switch makes and
/// the engine trusts, asserting what their makers guarantee.
///
/// - LINK_IN (`Origin::Shard`, another shard's message): entries in
///   sequence, a refund answering a credit in flight, an acknowledgement of
///   what was sent, an account announced by its home shard.
/// - MULTI (`Origin::Router`): each round once, above the complete mark.
///
/// A channel can send neither. Bodies that break those guarantees are the
/// switch's bug, not bad input, so the targets feed only bodies that keep
/// them, and fuzz everything else about them.
#[must_use]
pub fn switch_could_send(engine: &harbour::engine::Engine, kind: u16, body: &[u8]) -> bool {
    match kind {
        harbour::protocol::kind::LINK_IN => peer_could_send(engine, body),
        harbour::protocol::kind::MULTI => harbour::engine::multi::decode(body).is_none_or(|m| {
            let multi = engine.multi();
            m.seq > multi.complete && !multi.recent.contains(&m.seq)
        }),
        _ => true,
    }
}

fn peer_could_send(engine: &harbour::engine::Engine, body: &[u8]) -> bool {
    use harbour::engine::links::{EntryKind, decode_link_in};
    use harbour::protocol::accounts::CUSTOMER_ID_MIN;
    let Some(m) = decode_link_in(body) else { return false };
    let links = engine.links();
    if m.from >= links.shards() || m.from == links.me {
        return false;
    }
    let link = &links.links[usize::from(m.from)];
    let shards = usize::from(links.shards());
    let mut refunded = std::collections::BTreeSet::new();
    m.ack <= link.last_seq
        && m.entries.first().is_none_or(|e| e.seq <= link.applied + 1)
        && m.entries.iter().filter(|e| e.seq > link.applied).all(|e| match e.kind {
            EntryKind::Credit => harbour::money::CurrencyIndex::of(e.currency).is_some(),
            EntryKind::Refund => links.flight(m.from, e.amount).is_some_and(|(credit, flight)| {
                credit.id == e.id
                    && refunded.insert(e.amount)
                    && engine.transfers().get(flight.at).holds == harbour::protocol::records::Holds::IN_FLIGHT.bits()
            }),
            EntryKind::Account => {
                e.account >= CUSTOMER_ID_MIN
                    && harbour::engine::shard_of(e.account, shards) == usize::from(m.from)
                    && engine.book().account(e.account).is_none()
            }
            EntryKind::QuoteSpent => true,
        })
}
