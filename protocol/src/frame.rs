//! Frames: the 32-byte header and its checks in the contract's order (the
//! kinds a header may name are in [`crate::kinds`]).
//!
//! Decoding is incremental (check → parse → advance): [`decode`] looks at
//! the bytes received so far and either asks for more, yields one whole
//! frame and removes it from the buffer, or reports the first failed check.
//! It never reads past what arrived and never allocates a body larger than
//! `max_body`, so a slow or hostile sender costs only its own buffer.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of a frame header.
pub const HEADER_SIZE: usize = 32;
/// `HKSW`.
pub const MAGIC: [u8; 4] = *b"HKSW";
/// Protocol version.
pub const VERSION: u16 = 1;
/// A response's kind is the request's with this bit set.
pub const RESPONSE_BIT: u16 = 0x8000;
/// Kind of an ERROR frame.
pub const ERROR_KIND: u16 = 0xFFFF;

/// Frame-level error codes (contract §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    BadMagic = 1,
    BadVersion = 2,
    BadChecksum = 3,
    FrameTooLarge = 4,
    BadLength = 5,
    UnknownKind = 6,
    BatchTooLarge = 7,
    NotAuthenticated = 8,
    AuthFailed = 9,
    Forbidden = 10,
    TooManyInFlight = 11,
    Busy = 12,
    Malformed = 13,
    /// A cluster node that is not the leader (contract §7): nothing
    /// applied; the detail is the leader's channel address, or empty.
    NotLeader = 14,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 14] = [
        Self::BadMagic,
        Self::BadVersion,
        Self::BadChecksum,
        Self::FrameTooLarge,
        Self::BadLength,
        Self::UnknownKind,
        Self::BatchTooLarge,
        Self::NotAuthenticated,
        Self::AuthFailed,
        Self::Forbidden,
        Self::TooManyInFlight,
        Self::Busy,
        Self::Malformed,
        Self::NotLeader,
    ];

    /// The contract's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::BadMagic => "BAD_MAGIC",
            Self::BadVersion => "BAD_VERSION",
            Self::BadChecksum => "BAD_CHECKSUM",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::BadLength => "BAD_LENGTH",
            Self::UnknownKind => "UNKNOWN_KIND",
            Self::BatchTooLarge => "BATCH_TOO_LARGE",
            Self::NotAuthenticated => "NOT_AUTHENTICATED",
            Self::AuthFailed => "AUTH_FAILED",
            Self::Forbidden => "FORBIDDEN",
            Self::TooManyInFlight => "TOO_MANY_IN_FLIGHT",
            Self::Busy => "BUSY",
            Self::Malformed => "MALFORMED",
            Self::NotLeader => "NOT_LEADER",
        }
    }

    /// Parses a wire value.
    #[must_use]
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| *c as u16 == v)
    }

    /// Whether the connection is closed after this error (the frame, or the
    /// session, can't be trusted).
    #[must_use]
    pub const fn closes(self) -> bool {
        matches!(
            self,
            Self::BadMagic
                | Self::BadVersion
                | Self::BadChecksum
                | Self::FrameTooLarge
                | Self::NotAuthenticated
                | Self::AuthFailed
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fields of a header a receiver acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub body_len: u32,
    pub count: u32,
    pub request_id: u64,
}

/// A frame that failed a check before its body could be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    /// The frame's request id if its header could be read, else 0.
    pub request_id: u64,
}

/// Writes a whole frame (header and body) to `out`.
pub fn encode(out: &mut BytesMut, kind: u16, count: u32, request_id: u64, body: &[u8]) {
    let mut h = [0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&kind.to_le_bytes());
    h[8..12].copy_from_slice(&u32::try_from(body.len()).expect("body fits u32").to_le_bytes());
    h[12..16].copy_from_slice(&count.to_le_bytes());
    h[16..24].copy_from_slice(&request_id.to_le_bytes());
    let body_crc = if body.is_empty() { 0 } else { crc32c::crc32c(body) };
    h[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&header_crc.to_le_bytes());
    out.reserve(HEADER_SIZE + body.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
}

/// An ERROR frame's body: code, detail length, detail.
#[must_use]
pub fn error_body(code: ErrorCode, detail: &str) -> Vec<u8> {
    let mut end = detail.len().min(1024);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let detail = &detail.as_bytes()[..end];
    let mut body = Vec::with_capacity(4 + detail.len());
    body.extend_from_slice(&(code as u16).to_le_bytes());
    body.extend_from_slice(&(detail.len() as u16).to_le_bytes());
    body.extend_from_slice(detail);
    body
}

/// Reads an ERROR frame's body.
#[must_use]
pub fn parse_error_body(body: &[u8]) -> Option<(u16, String)> {
    let code = u16::from_le_bytes(body.get(0..2)?.try_into().ok()?);
    let len = u16::from_le_bytes(body.get(2..4)?.try_into().ok()?) as usize;
    let detail = body.get(4..4 + len)?;
    Some((code, String::from_utf8_lossy(detail).into_owned()))
}

/// Takes one frame off the front of `buf` if it has arrived whole.
///
/// Checks, in the contract's order: magic, version, header CRC, body length
/// (`max_body`), body CRC. `Ok(None)` means "wait for more bytes"; nothing is
/// consumed until a whole frame is there.
pub fn decode(buf: &mut BytesMut, max_body: u32) -> Result<Option<(Header, Bytes)>, FrameError> {
    let have = buf.len();
    if have >= 4 && buf[0..4] != MAGIC {
        return Err(FrameError { code: ErrorCode::BadMagic, request_id: 0 });
    }
    if have < HEADER_SIZE {
        return Ok(None);
    }
    let h = &buf[..HEADER_SIZE];
    let read_u32 = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4"));
    let request_id = u64::from_le_bytes(h[16..24].try_into().expect("8"));
    let fail = |code| Err(FrameError { code, request_id });
    if u16::from_le_bytes([h[4], h[5]]) != VERSION {
        return fail(ErrorCode::BadVersion);
    }
    if crc32c::crc32c(&h[0..28]) != read_u32(28) {
        return fail(ErrorCode::BadChecksum);
    }
    let header =
        Header { kind: u16::from_le_bytes([h[6], h[7]]), body_len: read_u32(8), count: read_u32(12), request_id };
    if header.body_len > max_body {
        return fail(ErrorCode::FrameTooLarge);
    }
    let body_crc = read_u32(24);
    let total = HEADER_SIZE + header.body_len as usize;
    if have < total {
        // Memory grows with bytes that arrive, never with a claimed length.
        return Ok(None);
    }
    let body_ok =
        if header.body_len == 0 { body_crc == 0 } else { crc32c::crc32c(&buf[HEADER_SIZE..total]) == body_crc };
    if !body_ok {
        return fail(ErrorCode::BadChecksum);
    }
    buf.advance(HEADER_SIZE);
    let body = buf.split_to(header.body_len as usize).freeze();
    Ok(Some((header, body)))
}

/// Channel roles (bit mask).
pub mod role {
    pub const ACCOUNTS: u16 = 1;
    pub const PAYMENTS: u16 = 2;
    pub const LENDING: u16 = 4;
    pub const TREASURY: u16 = 8;
    pub const OPERATOR: u16 = 16;
    pub const REPORTING: u16 = 32;
    /// Every role.
    pub const ALL: u16 = 63;
    /// Role names, for configuration files.
    pub const NAMES: [(&str, u16); 6] = [
        ("ACCOUNTS", ACCOUNTS),
        ("PAYMENTS", PAYMENTS),
        ("LENDING", LENDING),
        ("TREASURY", TREASURY),
        ("OPERATOR", OPERATOR),
        ("REPORTING", REPORTING),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind;

    fn frame(kind: u16, count: u32, request_id: u64, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, kind, count, request_id, body);
        out
    }

    fn check(mut bytes: BytesMut, max_body: u32, expect: Result<Option<u16>, (ErrorCode, u64)>) {
        let got = decode(&mut bytes, max_body).map(|f| f.map(|(h, _)| h.kind)).map_err(|e| (e.code, e.request_id));
        assert_eq!(got, expect);
    }

    #[test]
    fn checks_in_the_contracts_order() {
        let good = frame(kind::PING, 0, 9, &[]);
        check(good.clone(), 1024, Ok(Some(kind::PING)));
        // Partial frames wait; nothing is consumed.
        check(BytesMut::from(&good[..31]), 1024, Ok(None));
        check(BytesMut::from(&good[..3]), 1024, Ok(None));
        // Garbage is refused as soon as four bytes show it.
        check(BytesMut::from(&b"GET / HTTP/1.1"[..]), 1024, Err((ErrorCode::BadMagic, 0)));
        let mut v = good.clone();
        v[4] = 2;
        v[0] = b'X';
        check(v.clone(), 1024, Err((ErrorCode::BadMagic, 0)));
        v[0] = b'H';
        check(v, 1024, Err((ErrorCode::BadVersion, 9)));
        let mut c = good.clone();
        c[20] ^= 1;
        check(c, 1024, Err((ErrorCode::BadChecksum, 9 ^ (1 << 32))));
        let body = vec![1u8; 64];
        let big = frame(kind::SUBMIT_TRANSFERS, 1, 3, &body);
        check(big.clone(), 63, Err((ErrorCode::FrameTooLarge, 3)));
        check(BytesMut::from(&big[..40]), 64, Ok(None));
        let mut bad_body = big;
        bad_body[40] ^= 1;
        check(bad_body, 64, Err((ErrorCode::BadChecksum, 3)));
    }

    #[test]
    fn takes_frames_off_one_at_a_time() {
        let mut buf = frame(kind::PING, 0, 1, &[]);
        buf.extend_from_slice(&frame(kind::LOOKUP_TRANSFERS, 1, 2, &[7; 16]));
        buf.extend_from_slice(&frame(kind::PING, 0, 3, &[])[..10]);
        let (h1, b1) = decode(&mut buf, 1024).unwrap().unwrap();
        let (h2, b2) = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((h1.request_id, b1.len()), (1, 0));
        assert_eq!((h2.request_id, h2.count, &b2[..]), (2, 1, &[7u8; 16][..]));
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 10, "the partial third frame waits");
    }

    #[test]
    fn error_bodies_round_trip() {
        let body = error_body(ErrorCode::Forbidden, "role PAYMENTS needed");
        assert_eq!(parse_error_body(&body), Some((10, "role PAYMENTS needed".to_string())));
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code as u16), Some(code));
        }
    }
}

/// The worked example of `docs/protocol.md`, pinned so the document cannot
/// drift from the code.
#[cfg(test)]
mod worked_example {
    use super::*;
    use crate::kind;
    use crate::records::{STATE_POSTED, Transfer, TransferResult, encode_all};

    fn hex(bytes: &[u8]) -> String {
        bytes
            .chunks(16)
            .map(|l| l.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn submit_transfers_frame_and_answer() {
        // Deposit HK$1,000.00 from SETTLEMENT_IN (4) to account 1024,
        // transfer id 1, request id 7.
        let t = Transfer {
            transfer_id: 1,
            debit_account: 4,
            credit_account: 1024,
            amount: 100_000,
            debit_currency: 344,
            credit_currency: 344,
            ..Transfer::default()
        };
        let mut request = BytesMut::new();
        encode(&mut request, kind::SUBMIT_TRANSFERS, 1, 7, &encode_all(&[t]));
        let answer = TransferResult {
            transfer_id: 1,
            code: 0,
            state: STATE_POSTED,
            holds: 0,
            debit_amount: 100_000,
            credit_amount: 100_000,
            rate_e9: 1_000_000_000,
            auto_credit_amount: 0,
            hold_until_ms: 0,
        };
        let mut response = BytesMut::new();
        encode(&mut response, kind::SUBMIT_TRANSFERS | RESPONSE_BIT, 1, 7, &encode_all(&[answer]));
        let doc = include_str!("../../docs/protocol.md");
        let (request_hex, response_hex) = (hex(&request), hex(&response));
        println!("request:\n{request_hex}\nresponse:\n{response_hex}");
        assert!(doc.contains(&request_hex), "docs/protocol.md shows this request:\n{request_hex}");
        assert!(doc.contains(&response_hex), "docs/protocol.md shows this response:\n{response_hex}");
    }
}
