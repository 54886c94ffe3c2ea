"""Records: every record's size, its fields' offsets as contract §4 gives
them, encode/decode round trips, reserved bytes left zero, refused
values, and the enums that names carry."""

import unittest
from typing import Dict, List, Tuple, Type

from harbour_client.codes import ResultCode, result_code
from harbour_client.records import (
    RECORDS,
    STR_PAGE_LIMIT_MAX,
    Account,
    AccountKind,
    Balance,
    BalanceKey,
    ClusterChange,
    ClusterOp,
    CreditLine,
    CreditLineFlags,
    Currency,
    Disburse,
    Finalize,
    FinalizeAction,
    FxRate,
    Holds,
    Id,
    LoanResult,
    LoanState,
    Method,
    Outcome,
    Quote,
    QuoteFlags,
    QuoteRequest,
    Record,
    RecordResult,
    Repay,
    SetTime,
    StepUp,
    StrFormat,
    StrHeader,
    StrPageFlags,
    StrPageHeader,
    StrPageRequest,
    StrRequest,
    Transfer,
    TransferFlags,
    TransferResult,
    TransferState,
    decode_all,
    encode_all,
)

U64 = (1 << 64) - 1
U128 = (1 << 128) - 1

# One record of each type with every field set to something distinctive
# (the largest values where it matters, so a field that overflowed into its
# neighbour would show).
SAMPLES: List[Record] = [
    Account(account_id=U64, kind=AccountKind.CUSTOMER, flags=0, home_country=344, customer_ref=U64 - 1),
    RecordResult(key=9, code=ResultCode.ACCOUNT_EXISTS),
    Transfer(
        transfer_id=U128 - 1,
        debit_account=4,
        credit_account=2048,
        amount=U64,
        debit_currency=344,
        credit_currency=840,
        destination_country=156,
        flags=TransferFlags.PENDING | TransferFlags.AUTO_CREDIT,
        fx_quote_id=3,
        user_data=U64,
    ),
    TransferResult(
        transfer_id=(1 << 127) + 5,
        code=ResultCode.OK,
        state=TransferState.PENDING,
        holds=Holds.FACE_REVIEW | Holds.CLIENT,
        debit_amount=5,
        credit_amount=6,
        rate_e9=1_000_000_000,
        auto_credit_amount=7,
        hold_until_ms=U64,
    ),
    StepUp(transfer_id=U128, method=Method.SMS_OTP, outcome=Outcome.FAIL),
    Id(id=U128),
    Finalize(transfer_id=8, action=FinalizeAction.VOID),
    BalanceKey(account_id=U64, currency=392),
    Balance(
        account_id=4,
        currency=344,
        code=ResultCode.OK,
        balance=-(1 << 63),
        held=1,
        credit_available=2,
        loans_outstanding=U64,
    ),
    SetTime(unix_ms=1_767_225_600_000),
    FxRate(from_currency=344, to_currency=840, rate_e9=U64),
    QuoteRequest(from_currency=344, to_currency=840, flags=QuoteFlags.AMOUNT_IN_CREDIT_CURRENCY, amount=U64),
    Quote(quote_id=1, code=ResultCode.QUOTES_FULL, rate_e9=2, debit_amount=3, credit_amount=4, expires_at_ms=U64),
    CreditLine(
        account_id=1024,
        currency=344,
        flags=CreditLineFlags.AUTO_MICRO_CREDIT,
        apr_bps=4800,
        limit=U64,
        micro_credit_max=3,
    ),
    Disburse(loan_id=U128, account_id=1024, currency=344, term_days=(1 << 32) - 1, principal=U64),
    Repay(repayment_id=U128, loan_id=U128 - 1, amount=U64),
    LoanResult(
        loan_id=7,
        code=ResultCode.OK,
        state=LoanState.ACTIVE,
        apr_bps=1000,
        account_id=U64,
        currency=344,
        ear_bps=1052,
        principal_outstanding=1,
        interest_accrued=2,
        disbursed_at_ms=U64,
    ),
    StrRequest(year=2026, month=11, format=StrFormat.CSV),
    StrHeader(code=ResultCode.NOTHING_TO_REPORT, format=StrFormat.XML, report_len=(1 << 32) - 1),
    StrPageRequest(
        year=2026,
        month=12,
        format=StrFormat.CSV,
        limit=STR_PAGE_LIMIT_MAX,
        as_of_ms=U64,
        after_ms=U64 - 1,
        after_id=U128,
    ),
    StrPageHeader(
        code=ResultCode.OVERFLOW,
        format=StrFormat.XML,
        flags=StrPageFlags.LAST,
        report_len=(1 << 32) - 1,
        cases=(1 << 32) - 2,
        rows=(1 << 32) - 3,
        as_of_ms=U64,
        next_after_ms=U64 - 1,
        next_after_id=U128 - 1,
    ),
    ClusterChange(node_id=U64, op=ClusterOp.ADD, channel="10.0.0.4:7400", peer="n" * 62 + ":1"),
]

# Contract §4 (and docs/protocol.md for ClusterChange): size, each field's
# offset, and the reserved byte ranges.
LAYOUTS: Dict[Type[Record], Tuple[int, Dict[str, int], List[Tuple[int, int]]]] = {
    Account: (
        32,
        {"account_id": 0, "kind": 8, "flags": 10, "home_country": 12, "customer_ref": 16},
        [(14, 16), (24, 32)],
    ),
    RecordResult: (32, {"key": 0, "code": 8}, [(10, 32)]),
    Transfer: (
        64,
        {
            "transfer_id": 0,
            "debit_account": 16,
            "credit_account": 24,
            "amount": 32,
            "debit_currency": 40,
            "credit_currency": 42,
            "destination_country": 44,
            "flags": 46,
            "fx_quote_id": 48,
            "user_data": 56,
        },
        [],
    ),
    TransferResult: (
        64,
        {
            "transfer_id": 0,
            "code": 16,
            "state": 18,
            "holds": 19,
            "debit_amount": 24,
            "credit_amount": 32,
            "rate_e9": 40,
            "auto_credit_amount": 48,
            "hold_until_ms": 56,
        },
        [(20, 24)],
    ),
    StepUp: (24, {"transfer_id": 0, "method": 16, "outcome": 17}, [(18, 24)]),
    Id: (16, {"id": 0}, []),
    Finalize: (32, {"transfer_id": 0, "action": 16}, [(17, 32)]),
    BalanceKey: (16, {"account_id": 0, "currency": 8}, [(10, 16)]),
    Balance: (
        48,
        {
            "account_id": 0,
            "currency": 8,
            "code": 10,
            "balance": 16,
            "held": 24,
            "credit_available": 32,
            "loans_outstanding": 40,
        },
        [(12, 16)],
    ),
    SetTime: (16, {"unix_ms": 0}, [(8, 16)]),
    FxRate: (16, {"from_currency": 0, "to_currency": 2, "rate_e9": 8}, [(4, 8)]),
    QuoteRequest: (16, {"from_currency": 0, "to_currency": 2, "flags": 4, "amount": 8}, [(6, 8)]),
    Quote: (
        48,
        {"quote_id": 0, "code": 8, "rate_e9": 16, "debit_amount": 24, "credit_amount": 32, "expires_at_ms": 40},
        [(10, 16)],
    ),
    CreditLine: (
        32,
        {"account_id": 0, "currency": 8, "flags": 10, "apr_bps": 12, "limit": 16, "micro_credit_max": 24},
        [],
    ),
    Disburse: (
        48,
        {"loan_id": 0, "account_id": 16, "currency": 24, "term_days": 28, "principal": 32},
        [(26, 28), (40, 48)],
    ),
    Repay: (48, {"repayment_id": 0, "loan_id": 16, "amount": 32}, [(40, 48)]),
    LoanResult: (
        64,
        {
            "loan_id": 0,
            "code": 16,
            "state": 18,
            "apr_bps": 20,
            "account_id": 24,
            "currency": 32,
            "ear_bps": 36,
            "principal_outstanding": 40,
            "interest_accrued": 48,
            "disbursed_at_ms": 56,
        },
        [(19, 20), (34, 36)],
    ),
    StrRequest: (16, {"year": 0, "month": 2, "format": 3}, [(4, 16)]),
    StrHeader: (8, {"code": 0, "format": 2, "report_len": 4}, [(3, 4)]),
    StrPageRequest: (
        48,
        {"year": 0, "month": 2, "format": 3, "limit": 4, "as_of_ms": 8, "after_ms": 16, "after_id": 32},
        [(24, 32)],
    ),
    StrPageHeader: (
        48,
        {
            "code": 0,
            "format": 2,
            "flags": 3,
            "report_len": 4,
            "cases": 8,
            "rows": 12,
            "as_of_ms": 16,
            "next_after_ms": 24,
            "next_after_id": 32,
        },
        [],
    ),
    ClusterChange: (144, {"node_id": 0, "op": 8, "channel": 16, "peer": 80}, [(9, 16)]),
}


class LayoutTest(unittest.TestCase):
    def test_every_record_has_a_sample_and_a_layout(self) -> None:
        self.assertEqual({type(r) for r in SAMPLES}, set(RECORDS))
        self.assertEqual(set(LAYOUTS), set(RECORDS))

    def test_sizes_and_offsets_are_the_contracts(self) -> None:
        for cls, (size, offsets, _) in LAYOUTS.items():
            with self.subTest(record=cls.__name__):
                self.assertEqual(cls.SIZE, size)
                self.assertEqual(len(cls().encode()), size)
                self.assertEqual(cls.offsets(), offsets)

    def test_reserved_bytes_stay_zero(self) -> None:
        for r in SAMPLES:
            encoded = r.encode()
            for start, end in LAYOUTS[type(r)][2]:
                self.assertEqual(encoded[start:end], bytes(end - start), f"{type(r).__name__} {start}..{end}")

    def test_transfer_bytes_land_at_the_contracts_offsets(self) -> None:
        # As records::tests::transfer_layout_matches_contract_offsets.
        t = Transfer(
            transfer_id=0x0102,
            debit_account=0x0304,
            credit_account=0x0506,
            amount=0x0708,
            debit_currency=0x090A,
            credit_currency=0x0B0C,
            destination_country=0x0D0E,
            flags=0x0001,
            fx_quote_id=0x1112,
            user_data=0x1314,
        )
        b = t.encode()
        self.assertEqual(b[0:2], bytes([0x02, 0x01]))
        self.assertEqual(b[16:18], bytes([0x04, 0x03]))
        self.assertEqual(b[24:26], bytes([0x06, 0x05]))
        self.assertEqual(b[32:34], bytes([0x08, 0x07]))
        self.assertEqual(b[40:46], bytes([0x0A, 0x09, 0x0C, 0x0B, 0x0E, 0x0D]))
        self.assertEqual(b[46:48], bytes([0x01, 0x00]))
        self.assertEqual(b[48:50], bytes([0x12, 0x11]))
        self.assertEqual(b[56:58], bytes([0x14, 0x13]))

    def test_str_page_bytes_land_at_their_offsets(self) -> None:
        # protocol/src/records.rs, StrPageRequest and StrPageHeader; docs/protocol.md.
        r = StrPageRequest(
            year=0x07EA,
            month=0x0B,
            format=StrFormat.CSV,
            limit=0x01020304,
            as_of_ms=0x1112131415161718,
            after_ms=0x2122232425262728,
            after_id=(0x3132333435363738 << 64) | 0x4142434445464748,
        )
        b = r.encode()
        self.assertEqual(len(b), 48)
        self.assertEqual(b[0:4], bytes([0xEA, 0x07, 0x0B, 0x02]))
        self.assertEqual(b[4:8], bytes([0x04, 0x03, 0x02, 0x01]))
        self.assertEqual(b[8:16], (0x1112131415161718).to_bytes(8, "little"))
        self.assertEqual(b[16:24], (0x2122232425262728).to_bytes(8, "little"))
        self.assertEqual(b[24:32], bytes(8), "reserved")
        self.assertEqual(b[32:40], (0x4142434445464748).to_bytes(8, "little"), "u128: low half first")
        self.assertEqual(b[40:48], (0x3132333435363738).to_bytes(8, "little"))
        self.assertEqual(b[32:48], r.after_id.to_bytes(16, "little"))
        # The header, from bytes laid out by hand.
        raw = (
            (22).to_bytes(2, "little")
            + bytes([1, 1])
            + (0x0A0B0C0D).to_bytes(4, "little")
            + (7).to_bytes(4, "little")
            + (3).to_bytes(4, "little")
            + (0x5152535455565758).to_bytes(8, "little")
            + (0x6162636465666768).to_bytes(8, "little")
            + ((1 << 100) + 5).to_bytes(16, "little")
        )
        h = StrPageHeader.decode(raw)
        self.assertEqual(
            (h.code, h.format, h.flags, h.report_len, h.cases, h.rows),
            (ResultCode.INVALID_FIELD, StrFormat.XML, StrPageFlags.LAST, 0x0A0B0C0D, 7, 3),
        )
        self.assertEqual(
            (h.as_of_ms, h.next_after_ms, h.next_after_id), (0x5152535455565758, 0x6162636465666768, (1 << 100) + 5)
        )
        self.assertTrue(h.last)
        self.assertEqual(h.encode(), raw)
        self.assertFalse(StrPageHeader.decode(raw[:3] + b"\0" + raw[4:]).last)

    def test_str_page_request_first_and_after(self) -> None:
        first = StrPageRequest(2026, 3, StrFormat.XML, 500)
        self.assertTrue(first.first)
        self.assertEqual(first.encode()[8:48], bytes(40), "as_of_ms, the cursor and reserved all 0 on the first page")
        header = StrPageHeader(as_of_ms=1_772_000_000_000, next_after_ms=1_771_000_000_000, next_after_id=99)
        following = first.after(header)
        self.assertEqual(
            following, StrPageRequest(2026, 3, StrFormat.XML, 500, 1_772_000_000_000, 1_771_000_000_000, 99)
        )
        self.assertFalse(following.first)
        self.assertEqual(STR_PAGE_LIMIT_MAX, 100_000)

    def test_u128_is_low_half_first(self) -> None:
        b = Id((2 << 64) | 1).encode()
        self.assertEqual(b, (1).to_bytes(8, "little") + (2).to_bytes(8, "little"))

    def test_i64_balance_is_twos_complement(self) -> None:
        b = Balance(balance=-5).encode()
        self.assertEqual(b[16:24], (2**64 - 5).to_bytes(8, "little"))
        self.assertEqual(Balance.decode(b).balance, -5)


class RoundTripTest(unittest.TestCase):
    def test_every_record_round_trips(self) -> None:
        for r in SAMPLES:
            with self.subTest(record=type(r).__name__):
                encoded = r.encode()
                self.assertEqual(len(encoded), type(r).SIZE)
                self.assertEqual(type(r).decode(encoded), r)

    def test_bodies_of_many_records_round_trip(self) -> None:
        transfers = [Transfer(transfer_id=i, amount=i * 100) for i in range(1, 50)]
        body = encode_all(transfers)
        self.assertEqual(len(body), 49 * 64)
        self.assertEqual(decode_all(Transfer, body), transfers)
        self.assertEqual(decode_all(Transfer, b""), [])
        with self.assertRaises(ValueError):
            decode_all(Transfer, body[:-1])

    def test_decode_wants_exactly_the_size(self) -> None:
        with self.assertRaises(ValueError):
            Id.decode(bytes(15))
        with self.assertRaises(ValueError):
            Id.decode(bytes(17))

    def test_decoded_enums_carry_names(self) -> None:
        r = TransferResult.decode(
            TransferResult(transfer_id=1, code=13, state=2, holds=Holds.SMS_OTP | Holds.MANUAL_REVIEW).encode()
        )
        self.assertIs(r.code, ResultCode.NOT_PENDING)
        self.assertIs(r.state, TransferState.PENDING)
        self.assertIsInstance(r.holds, Holds)
        self.assertTrue(r.holds & Holds.SMS_OTP)
        self.assertTrue(r.holds & Holds.MANUAL_REVIEW)
        self.assertFalse(r.holds & Holds.CLIENT)
        self.assertEqual(int(r.holds), 10)
        mule = TransferResult.decode(TransferResult(transfer_id=2, state=2, holds=64).encode())
        self.assertIs(mule.holds, Holds.MULE_REVIEW)
        loan = LoanResult.decode(LoanResult(state=2).encode())
        self.assertIs(loan.state, LoanState.REPAID)

    def test_unknown_numbers_stay_numbers(self) -> None:
        r = RecordResult.decode(RecordResult(key=1, code=200).encode())
        self.assertEqual(r.code, 200)
        self.assertNotIsInstance(r.code, ResultCode)
        self.assertEqual(result_code(27), ResultCode.ACCOUNT_NOT_FOUND)
        s = StepUp.decode(StepUp(transfer_id=1, method=9, outcome=1).encode())
        self.assertEqual(s.method, 9)

    def test_cluster_change_addresses(self) -> None:
        c = ClusterChange(node_id=2, op=ClusterOp.REMOVE)
        b = c.encode()
        self.assertEqual(b[16:], bytes(128), "empty addresses for a removal")
        c = ClusterChange(node_id=2, op=ClusterOp.ADD, channel="127.0.0.1:7400", peer="127.0.0.1:7401")
        b = c.encode()
        self.assertEqual(b[16:30], b"127.0.0.1:7400")
        self.assertEqual(b[30:80], bytes(50))
        self.assertEqual(ClusterChange.decode(b).peer, "127.0.0.1:7401")


class RefusedValuesTest(unittest.TestCase):
    def test_a_value_that_does_not_fit_names_its_field(self) -> None:
        cases = [
            (Transfer(transfer_id=1 << 128), "Transfer.transfer_id"),
            (Transfer(transfer_id=-1), "Transfer.transfer_id"),
            (Transfer(amount=1 << 64), "Transfer.amount"),
            (Transfer(debit_currency=70000), "Transfer.debit_currency"),
            (StepUp(method=256), "StepUp.method"),
            (Balance(balance=1 << 63), "Balance.balance"),
            (CreditLine(apr_bps=1 << 32), "CreditLine.apr_bps"),
            (Account(account_id="1024"), "Account.account_id"),  # type: ignore[arg-type]
            (ClusterChange(node_id=1, op=1, channel="x" * 65), "ClusterChange.channel"),
        ]
        for record, field in cases:
            with self.subTest(field=field):
                with self.assertRaises(ValueError) as e:
                    record.encode()
                self.assertIn(field, str(e.exception))


class EnumTest(unittest.TestCase):
    def test_result_codes_are_the_contracts(self) -> None:
        self.assertEqual([int(c) for c in ResultCode][:28], list(range(28)))
        self.assertEqual(
            {c.name: int(c) for c in ResultCode if c >= 64},
            {"CROSS_SHARD": 64, "NOT_SUPPORTED": 65, "QUOTES_FULL": 66, "IN_FLIGHT": 67},
        )
        self.assertEqual(ResultCode.INSUFFICIENT_FUNDS, 10)
        self.assertEqual(ResultCode(27).name, "ACCOUNT_NOT_FOUND")
        self.assertTrue(ResultCode.ALREADY_EXISTS.ok)
        self.assertFalse(ResultCode.ID_CONFLICT.ok)

    def test_holds_bits_by_name(self) -> None:
        self.assertEqual(
            {h.name: int(h) for h in Holds},
            {
                "FACE_REVIEW": 1,
                "SMS_OTP": 2,
                "COOLING_OFF": 4,
                "MANUAL_REVIEW": 8,
                "CLIENT": 16,
                "IN_FLIGHT": 32,
                "MULE_REVIEW": 64,
            },
        )

    def test_flags_and_enums(self) -> None:
        self.assertEqual(
            (TransferFlags.AMOUNT_IN_CREDIT_CURRENCY, TransferFlags.AUTO_CREDIT, TransferFlags.PENDING), (1, 2, 4)
        )
        self.assertEqual([int(s) for s in TransferState], [0, 1, 2, 3])
        self.assertEqual((Method.FACE, Method.SMS_OTP, Method.MANUAL_REVIEW), (1, 2, 3))
        self.assertEqual((Outcome.PASS, Outcome.FAIL), (1, 2))
        self.assertEqual((FinalizeAction.POST, FinalizeAction.VOID), (1, 2))
        self.assertEqual((StrFormat.XML, StrFormat.CSV), (1, 2))
        self.assertEqual(StrPageFlags.LAST, 1)
        self.assertEqual(Currency.HKD, 344)
        self.assertEqual(Currency.AUD, 36)
        self.assertEqual(len(Currency), 14)


if __name__ == "__main__":
    unittest.main()
