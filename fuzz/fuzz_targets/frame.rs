//! The wire frame decoder on arbitrary bytes, as a connection's read buffer
//! holds them.
//!
//! Input: `u16 max_body` (little-endian), then the bytes received. Checked:
//! - `Ok(None)` and errors consume nothing; a frame consumes exactly its
//!   header and body, and its body is at most `max_body`;
//! - every frame that decodes encodes back to the very bytes it came from
//!   (the header has no free bits), and every strict prefix of it asks for
//!   more bytes;
//! - the session bodies (CHALLENGE, HELLO, HELLO answer, ERROR) of the
//!   right size decode and encode back to the same bytes.
#![no_main]

use bytes::BytesMut;
use harbour::protocol::frame::{self, ErrorCode, HEADER_SIZE};
use harbour::protocol::session::{Challenge, HELLO_SIZE, Hello, HelloResponse};
use libfuzzer_sys::fuzz_target;

fn session_bodies_round_trip(kind: u16, body: &[u8]) {
    if let Some(c) = Challenge::decode(body) {
        // Bytes 18..32 are reserved: zero on encode.
        assert_eq!(&c.encode()[..18], &body[..18]);
    }
    if let Some(r) = HelloResponse::decode(body) {
        assert_eq!(&r.encode()[..], body);
    }
    if body.len() == HELLO_SIZE && body[4..8] == [0; 4] {
        assert_eq!(&Hello::decode(body).encode()[..], body);
    }
    if kind == frame::ERROR_KIND
        && let Some((code, detail)) = frame::parse_error_body(body)
        && let Some(code) = ErrorCode::from_u16(code)
    {
        let again = frame::error_body(code, &detail);
        assert_eq!(frame::parse_error_body(&again).map(|(c, _)| c), Some(code as u16));
        if detail.len() <= 1024 && body.get(4..4 + detail.len()) == Some(detail.as_bytes()) {
            assert_eq!(&again[..], &body[..again.len()], "an ERROR body in UTF-8 encodes back");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((max, received)) = data.split_at_checked(2) else { return };
    let max_body = u32::from(u16::from_le_bytes([max[0], max[1]]));
    let mut buf = BytesMut::from(received);
    let mut at = 0usize;
    loop {
        let before = buf.len();
        match frame::decode(&mut buf, max_body) {
            Ok(Some((h, body))) => {
                let len = HEADER_SIZE + body.len();
                assert_eq!(body.len(), h.body_len as usize);
                assert!(h.body_len <= max_body);
                assert_eq!(before - buf.len(), len, "a frame takes its header and body");
                let original = &received[at..at + len];
                let mut again = BytesMut::new();
                frame::encode(&mut again, h.kind, h.count, h.request_id, &body);
                assert_eq!(&again[..], original, "decode then encode gives the bytes back");
                for cut in [0, 3, 4, HEADER_SIZE - 1, HEADER_SIZE, len - 1] {
                    if cut < len {
                        let mut prefix = BytesMut::from(&original[..cut]);
                        assert_eq!(frame::decode(&mut prefix, max_body), Ok(None), "prefix of {cut} bytes");
                        assert_eq!(prefix.len(), cut);
                    }
                }
                session_bodies_round_trip(h.kind, &body);
                at += len;
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting consumes nothing");
                break;
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "a refused frame consumes nothing");
                if e.code == ErrorCode::BadMagic {
                    assert_eq!(e.request_id, 0);
                }
                break;
            }
        }
    }
});
