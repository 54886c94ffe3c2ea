//! Bodies of the switch's internal records (kinds `0xF0xx`, never on the
//! wire), owned here beside the wire records so that no module above this
//! crate reads a byte offset of them: SUBMIT_JUDGED, QUOTE_AT and SCOPED. (LINK_IN
//! and MULTI are encoded and decoded by the one engine module that owns
//! them, `engine::links` and `engine::multi`.)

use crate::records::{QuoteRequest, Record, Transfer};

/// Largest body of one logged record (wire requests are bounded well
/// below it; internal records the engine builds, such as a LINK_IN batch,
/// are sized to fit it).
pub const RECORD_BODY_MAX: usize = 16 << 20;

/// One logged AML verdict: the transfer at `index` of the SUBMIT_TRANSFERS
/// body of a SUBMIT_JUDGED record is held for review, for `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub index: u32,
    pub reason: u16,
}

/// Bytes of one verdict in a SUBMIT_JUDGED record: u32 index, u16 reason,
/// u16 zero.
pub const VERDICT_SIZE: usize = 8;
/// Bytes before the verdicts: u32 verdict count, u32 zero.
pub const JUDGED_HEADER_SIZE: usize = 8;

/// Encodes a SUBMIT_JUDGED body: the verdicts (ascending index), then the
/// SUBMIT_TRANSFERS body they judge.
#[must_use]
pub fn encode_judged(verdicts: &[Verdict], transfers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(judged_len(verdicts.len(), transfers.len()));
    out.extend_from_slice(&(verdicts.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in verdicts {
        out.extend_from_slice(&v.index.to_le_bytes());
        out.extend_from_slice(&v.reason.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(transfers);
    out
}

/// Bytes of a SUBMIT_JUDGED body with `verdicts` verdicts over a
/// SUBMIT_TRANSFERS body of `transfer_bytes`.
#[must_use]
pub const fn judged_len(verdicts: usize, transfer_bytes: usize) -> usize {
    JUDGED_HEADER_SIZE + verdicts * VERDICT_SIZE + transfer_bytes
}

/// Splits a SUBMIT_JUDGED body into its verdicts and its transfers; `None`
/// unless the verdicts are in strictly ascending index order, each names a
/// transfer of the body and has a reason `known` accepts, and the rest is
/// whole transfers.
#[must_use]
pub fn decode_judged(body: &[u8], known: impl Fn(u16) -> bool) -> Option<(Vec<Verdict>, &[u8])> {
    let header = body.get(..JUDGED_HEADER_SIZE)?;
    let count = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    if header[4..8] != [0; 4] {
        return None;
    }
    let verdict_bytes = count.checked_mul(VERDICT_SIZE)?;
    let rest = body.get(JUDGED_HEADER_SIZE..)?;
    let (verdict_bytes, transfers) = (rest.get(..verdict_bytes)?, &rest[verdict_bytes..]);
    if !transfers.len().is_multiple_of(Transfer::SIZE) {
        return None;
    }
    let n = transfers.len() / Transfer::SIZE;
    let mut out: Vec<Verdict> = Vec::with_capacity(count);
    for b in verdict_bytes.chunks_exact(VERDICT_SIZE) {
        let v = Verdict {
            index: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            reason: u16::from_le_bytes([b[4], b[5]]),
        };
        let ordered = out.last().is_none_or(|last| last.index < v.index);
        if !known(v.reason) || b[6..8] != [0, 0] || !ordered || v.index as usize >= n {
            return None;
        }
        out.push(v);
    }
    Some((out, transfers))
}

/// One QUOTE_AT record: FX_QUOTE's request with the quote id and expiry
/// the switch chose, so every shard holds the same quote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuoteAt {
    pub quote_id: u64,
    pub expires_at_ms: u64,
    pub request: QuoteRequest,
}

impl QuoteAt {
    /// Bytes of the record: u64 quote id, u64 expiry, the QuoteRequest.
    pub const SIZE: usize = 16 + QuoteRequest::SIZE;

    /// Appends the record to `out`.
    #[inline]
    pub fn push(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.quote_id.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        let at = out.len();
        out.resize(at + QuoteRequest::SIZE, 0);
        self.request.encode(&mut out[at..]);
    }

    /// Decodes one record (`b` is exactly [`QuoteAt::SIZE`] bytes).
    #[must_use]
    #[inline]
    pub fn decode(b: &[u8]) -> Self {
        Self {
            quote_id: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            expires_at_ms: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            request: QuoteRequest::decode(&b[16..]),
        }
    }
}

/// Which accounts a channel may act on (`docs/security.md`, account
/// scopes): debit in a transfer, step up, cancel or finalize a transfer
/// from, draw or repay a loan of, set a line on, and read. Paying any
/// account stays open. Empty (neither): every account, as the contract
/// has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The accounts the channel opened.
    pub own: bool,
    /// The accounts with ids in `first..=last`.
    pub range: Option<(u64, u64)>,
}

impl Scope {
    /// Whether the scope leaves every account open.
    #[must_use]
    pub const fn is_all(&self) -> bool {
        !self.own && self.range.is_none()
    }
}

/// On whose behalf a request is applied: the channel (recorded as the
/// opener of the accounts it creates) and its scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub channel: u32,
    pub scope: Scope,
}

/// Whether a SCOPED record may carry `kind`: the kinds whose records name
/// accounts, transfers or loans (and SUBMIT_JUDGED, a judged
/// SUBMIT_TRANSFERS), and the administrative acts the log carries with
/// the channel that took them (SET_FX_RATES, SET_TIME: the audit trail).
#[must_use]
pub const fn is_scoped_kind(kind: u16) -> bool {
    use crate::kind::*;
    matches!(
        kind,
        CREATE_ACCOUNTS
            | SUBMIT_TRANSFERS
            | SUBMIT_JUDGED
            | CONFIRM_STEP_UP
            | RESOLVE_REVIEW
            | CANCEL_TRANSFERS
            | FINALIZE_PENDING
            | LOOKUP_TRANSFERS
            | LOOKUP_BALANCES
            | SET_CREDIT_LINES
            | DISBURSE_LOANS
            | REPAY_LOANS
            | LOOKUP_LOANS
            | SET_FX_RATES
            | SET_TIME
    )
}

/// Bytes before the request a SCOPED record carries: u32 channel, u16
/// inner kind, u16 scope flags (bit 0 own, bit 1 range), u64 first, u64
/// last (both 0 without a range).
pub const SCOPED_HEADER_SIZE: usize = 24;
const SCOPE_OWN: u16 = 1;
const SCOPE_RANGE: u16 = 2;

/// Encodes a SCOPED record: `inner_kind`'s `body` applied as `caller`.
#[must_use]
pub fn encode_scoped(caller: &Caller, inner_kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SCOPED_HEADER_SIZE + body.len());
    let flags = u16::from(caller.scope.own) * SCOPE_OWN + u16::from(caller.scope.range.is_some()) * SCOPE_RANGE;
    let (first, last) = caller.scope.range.unwrap_or((0, 0));
    out.extend_from_slice(&caller.channel.to_le_bytes());
    out.extend_from_slice(&inner_kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a SCOPED record into its caller, inner kind and body; `None`
/// if the header is cut, has undefined flag bits, or a range that is
/// backwards or set without its flag.
#[must_use]
pub fn decode_scoped(body: &[u8]) -> Option<(Caller, u16, &[u8])> {
    let header = body.get(..SCOPED_HEADER_SIZE)?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let channel = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let inner = u16::from_le_bytes([header[4], header[5]]);
    let flags = u16::from_le_bytes([header[6], header[7]]);
    let (first, last) = (u64_at(8), u64_at(16));
    if flags & !(SCOPE_OWN | SCOPE_RANGE) != 0 {
        return None;
    }
    let range = if flags & SCOPE_RANGE != 0 {
        if first > last {
            return None;
        }
        Some((first, last))
    } else {
        if (first, last) != (0, 0) {
            return None;
        }
        None
    };
    let scope = Scope { own: flags & SCOPE_OWN != 0, range };
    Some((Caller { channel, scope }, inner, &body[SCOPED_HEADER_SIZE..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_at_round_trips() {
        let q = QuoteAt {
            quote_id: 7,
            expires_at_ms: 1_700_000_000_123,
            request: QuoteRequest { from: 344, to: 840, amount: 10_000, ..QuoteRequest::default() },
        };
        let mut out = vec![9];
        q.push(&mut out);
        assert_eq!(out.len(), 1 + QuoteAt::SIZE);
        assert_eq!(QuoteAt::decode(&out[1..]), q);
    }

    #[test]
    fn scoped_records_round_trip_and_bad_headers_are_refused() {
        let caller = Caller { channel: 9, scope: Scope { own: true, range: Some((2_000, 2_999)) } };
        let body = encode_scoped(&caller, 0x0011, &[1, 2, 3]);
        assert_eq!(decode_scoped(&body), Some((caller, 0x0011, &[1u8, 2, 3][..])));
        let all = Caller { channel: 3, scope: Scope::default() };
        assert_eq!(decode_scoped(&encode_scoped(&all, 7, &[])), Some((all, 7, &[][..])));
        assert_eq!(decode_scoped(&body[..SCOPED_HEADER_SIZE - 1]), None, "a cut header");
        let mut undefined = body.clone();
        undefined[6] |= 4;
        assert_eq!(decode_scoped(&undefined), None, "an undefined flag");
        let backwards = Caller { channel: 9, scope: Scope { own: false, range: Some((5, 4)) } };
        assert_eq!(decode_scoped(&encode_scoped(&backwards, 7, &[])), None, "a backwards range");
        let mut stray = encode_scoped(&all, 7, &[]);
        stray[8] = 1;
        assert_eq!(decode_scoped(&stray), None, "a range without its flag");
    }

    #[test]
    fn judged_bodies_round_trip_and_bad_ones_are_refused() {
        let transfers = vec![0u8; 3 * Transfer::SIZE];
        let verdicts = [Verdict { index: 0, reason: 4 }, Verdict { index: 2, reason: 8 }];
        let body = encode_judged(&verdicts, &transfers);
        assert_eq!(body.len(), judged_len(2, transfers.len()));
        let known = |r: u16| r == 4 || r == 8;
        assert_eq!(decode_judged(&body, known), Some((verdicts.to_vec(), &transfers[..])));
        assert_eq!(decode_judged(&body, |r| r == 4), None, "an unknown reason");
        assert_eq!(decode_judged(&body[..body.len() - 1], known), None, "a cut transfer");
        let backwards = encode_judged(&[verdicts[1], verdicts[0]], &transfers);
        assert_eq!(decode_judged(&backwards, known), None, "out of order");
    }
}
