//! No input from a channel may crash the switch: arbitrary records of every
//! kind the engine applies (whole records, any bytes, as a library caller
//! could send them) never panic it and never break its books; arbitrary
//! bytes never panic the frame decoder.

mod common;

use bytes::BytesMut;
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::frame;
use harbour::protocol::kind;
use proptest::prelude::*;

const KINDS: [u16; 15] = [
    kind::CREATE_ACCOUNTS,
    kind::SUBMIT_TRANSFERS,
    kind::CONFIRM_STEP_UP,
    kind::CANCEL_TRANSFERS,
    kind::FINALIZE_PENDING,
    kind::LOOKUP_TRANSFERS,
    kind::LOOKUP_BALANCES,
    kind::RESOLVE_REVIEW,
    kind::SET_TIME,
    kind::SET_FX_RATES,
    kind::FX_QUOTE,
    kind::SET_CREDIT_LINES,
    kind::DISBURSE_LOANS,
    kind::REPAY_LOANS,
    kind::LOOKUP_LOANS,
];

/// Bytes that look enough like real records to reach deep checks: small
/// ids and accounts, known currencies, now and then.
fn record_bytes(size: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => Just(0u8), 2 => 0u8..8, 1 => any::<u8>(), 1 => Just(0x58), 1 => Just(0x01), 1 => Just(0x04)],
        size,
    )
}

fn request() -> impl Strategy<Value = (u16, Vec<u8>)> {
    (0..KINDS.len(), 0usize..4).prop_flat_map(|(k, n)| {
        let kind = KINDS[k];
        let size = harbour::protocol::kinds::applied_record_size(kind).expect("an engine kind");
        (Just(kind), prop::collection::vec(record_bytes(size), n).prop_map(|records| records.concat()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_records_never_panic_the_engine(requests in prop::collection::vec(request(), 1..30)) {
        let mut e = Engine::new(EngineConfig { manual_clock: true, ..EngineConfig::default() }, MANUAL_CLOCK_START_MS);
        // Some accounts and money, so transfers get past existence checks.
        let setup = harbour::protocol::records::encode_all(&[common::account(1024), common::account(1025)]);
        e.apply(kind::CREATE_ACCOUNTS, &setup, e.now_ms(), &mut Vec::new()).unwrap();
        let money = harbour::protocol::records::encode_all(&[common::deposit(1 << 100, 1024, 1 << 40, common::HKD)]);
        e.apply(kind::SUBMIT_TRANSFERS, &money, e.now_ms(), &mut Vec::new()).unwrap();
        // And a line that lends, so loan records get past NO_CREDIT_LINE.
        let line = harbour::protocol::records::CreditLine {
            account_id: 1025,
            currency: common::HKD,
            flags: harbour::protocol::records::CREDIT_AUTO_MICRO_CREDIT,
            apr_bps: 4_800,
            limit: 1 << 40,
            micro_credit_max: 1 << 30,
        };
        let line = harbour::protocol::records::encode_all(&[line]);
        e.apply(kind::SET_CREDIT_LINES, &line, e.now_ms(), &mut Vec::new()).unwrap();
        for (kind, body) in &requests {
            let mut out = Vec::new();
            e.apply(*kind, body, e.now_ms(), &mut out).unwrap();
            let size = match *kind {
                kind::SUBMIT_TRANSFERS | kind::CONFIRM_STEP_UP | kind::CANCEL_TRANSFERS | kind::FINALIZE_PENDING
                | kind::LOOKUP_TRANSFERS | kind::RESOLVE_REVIEW | kind::DISBURSE_LOANS | kind::REPAY_LOANS
                | kind::LOOKUP_LOANS => 64,
                kind::LOOKUP_BALANCES | kind::FX_QUOTE => 48,
                _ => 32,
            };
            prop_assert_eq!(out.len(), body.len() / harbour::protocol::kinds::applied_record_size(*kind).unwrap() * size, "one answer per record");
            if let Err(err) = e.audit() {
                prop_assert!(false, "audit after kind {:#06x}: {}", kind, err);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8), max_body in 0u32..4096) {
        let mut buf = BytesMut::new();
        for c in chunks {
            buf.extend_from_slice(&c);
            while let Ok(Some((h, body))) = frame::decode(&mut buf, max_body) {
                prop_assert_eq!(body.len(), h.body_len as usize);
            }
        }
    }
}
