//! The session handshake (contract §2): CHALLENGE, HELLO and its answer.
//!
//! The switch sends a fresh 16-byte nonce; the channel proves it holds its
//! key with `HMAC-SHA256(key, "HKSW-HELLO" || server_nonce || client_nonce ||
//! channel_id LE)`. The MAC is compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// CHALLENGE body size.
pub const CHALLENGE_SIZE: usize = 32;
/// HELLO body size.
pub const HELLO_SIZE: usize = 56;
/// HELLO response body size.
pub const HELLO_RESPONSE_SIZE: usize = 24;
/// The label the MAC starts with.
pub const HELLO_LABEL: &[u8] = b"HKSW-HELLO";

/// CHALLENGE: the switch's nonce and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub server_nonce: [u8; 16],
    pub server_version: u16,
}

impl Challenge {
    /// The body.
    #[must_use]
    pub fn encode(&self) -> [u8; CHALLENGE_SIZE] {
        let mut b = [0u8; CHALLENGE_SIZE];
        b[0..16].copy_from_slice(&self.server_nonce);
        b[16..18].copy_from_slice(&self.server_version.to_le_bytes());
        b
    }

    /// Reads a body; `None` if it is not 32 bytes.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        (b.len() == CHALLENGE_SIZE).then(|| Self {
            server_nonce: b[0..16].try_into().expect("16"),
            server_version: u16::from_le_bytes([b[16], b[17]]),
        })
    }
}

/// HELLO: which channel, and the proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub channel_id: u32,
    pub client_nonce: [u8; 16],
    pub mac: [u8; 32],
}

impl Hello {
    /// A HELLO answering `server_nonce` with `key`.
    #[must_use]
    pub fn new(channel_id: u32, key: &[u8], server_nonce: &[u8; 16], client_nonce: [u8; 16]) -> Self {
        Self { channel_id, client_nonce, mac: mac(key, server_nonce, &client_nonce, channel_id) }
    }

    /// The body.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_SIZE] {
        let mut b = [0u8; HELLO_SIZE];
        b[0..4].copy_from_slice(&self.channel_id.to_le_bytes());
        b[8..24].copy_from_slice(&self.client_nonce);
        b[24..56].copy_from_slice(&self.mac);
        b
    }

    /// Reads a body (its length and reserved bytes were checked by the frame
    /// checks).
    #[must_use]
    pub fn decode(b: &[u8]) -> Self {
        Self {
            channel_id: u32::from_le_bytes(b[0..4].try_into().expect("4")),
            client_nonce: b[8..24].try_into().expect("16"),
            mac: b[24..56].try_into().expect("32"),
        }
    }

    /// Whether the MAC proves `key` for this challenge (constant time).
    #[must_use]
    pub fn verify(&self, key: &[u8], server_nonce: &[u8; 16]) -> bool {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        feed(&mut m, server_nonce, &self.client_nonce, self.channel_id);
        m.verify_slice(&self.mac).is_ok()
    }
}

fn feed(m: &mut Hmac<Sha256>, server_nonce: &[u8; 16], client_nonce: &[u8; 16], channel_id: u32) {
    m.update(HELLO_LABEL);
    m.update(server_nonce);
    m.update(client_nonce);
    m.update(&channel_id.to_le_bytes());
}

/// `HMAC-SHA256(key, "HKSW-HELLO" || server_nonce || client_nonce || channel_id LE)`.
#[must_use]
pub fn mac(key: &[u8], server_nonce: &[u8; 16], client_nonce: &[u8; 16], channel_id: u32) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    feed(&mut m, server_nonce, client_nonce, channel_id);
    m.finalize().into_bytes().into()
}

/// The HELLO response: the session's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloResponse {
    pub code: u16,
    pub roles: u16,
    pub max_batch: u32,
    pub max_in_flight: u32,
    pub max_body: u32,
    pub server_time_ms: u64,
}

impl HelloResponse {
    /// The body.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_RESPONSE_SIZE] {
        let mut b = [0u8; HELLO_RESPONSE_SIZE];
        b[0..2].copy_from_slice(&self.code.to_le_bytes());
        b[2..4].copy_from_slice(&self.roles.to_le_bytes());
        b[4..8].copy_from_slice(&self.max_batch.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_in_flight.to_le_bytes());
        b[12..16].copy_from_slice(&self.max_body.to_le_bytes());
        b[16..24].copy_from_slice(&self.server_time_ms.to_le_bytes());
        b
    }

    /// Reads a body; `None` if it is not 24 bytes.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        (b.len() == HELLO_RESPONSE_SIZE).then(|| Self {
            code: u16::from_le_bytes([b[0], b[1]]),
            roles: u16::from_le_bytes([b[2], b[3]]),
            max_batch: u32::from_le_bytes(b[4..8].try_into().expect("4")),
            max_in_flight: u32::from_le_bytes(b[8..12].try_into().expect("4")),
            max_body: u32::from_le_bytes(b[12..16].try_into().expect("4")),
            server_time_ms: u64::from_le_bytes(b[16..24].try_into().expect("8")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_the_contracts_hmac_and_verifies() {
        let nonce = [1u8; 16];
        let hello = Hello::new(1, b"hksw-dev-key", &nonce, [2u8; 16]);
        assert!(hello.verify(b"hksw-dev-key", &nonce));
        assert!(!hello.verify(b"hksw-dev-kez", &nonce), "wrong key");
        assert!(!hello.verify(b"hksw-dev-key", &[9u8; 16]), "another challenge (a replayed HELLO)");
        let decoded = Hello::decode(&hello.encode());
        assert_eq!(decoded, hello);
        // The MAC covers the channel id: the same proof for another channel fails.
        let other = Hello { channel_id: 2, ..hello };
        assert!(!other.verify(b"hksw-dev-key", &nonce));
        // Known answer, computed independently (Python: hmac.new(b"hksw-dev-key",
        // b"HKSW-HELLO" + b"\x01"*16 + b"\x02"*16 + b"\x01\x00\x00\x00", "sha256")).
        assert_eq!(hex(&hello.mac), KNOWN_MAC);
    }

    const KNOWN_MAC: &str = "1dbc8179f5c4fe18c879e1ed3b5e6559085c7e0520f22d6261990ae002c6b70e";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
