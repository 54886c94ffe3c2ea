"""The table of kinds: the numbers of the Rust ``kind`` module, the record
sizes of contract §3, and a typed client call for every kind."""

import unittest

from harbour_client.client import Client
from harbour_client.frame import Role
from harbour_client.kinds import KINDS, AnswerBody, CountRule, Kind, spec

# protocol/src/lib.rs, `kind`: every kind on the wire.
RUST_KINDS = {
    "PING": 0x0001,
    "CREATE_ACCOUNTS": 0x0010,
    "SUBMIT_TRANSFERS": 0x0011,
    "CONFIRM_STEP_UP": 0x0012,
    "CANCEL_TRANSFERS": 0x0013,
    "FINALIZE_PENDING": 0x0014,
    "LOOKUP_TRANSFERS": 0x0015,
    "LOOKUP_BALANCES": 0x0016,
    "SET_FX_RATES": 0x0020,
    "FX_QUOTE": 0x0021,
    "SET_CREDIT_LINES": 0x0030,
    "DISBURSE_LOANS": 0x0031,
    "REPAY_LOANS": 0x0032,
    "LOOKUP_LOANS": 0x0033,
    "RESOLVE_REVIEW": 0x0040,
    "SET_TIME": 0x0041,
    "EXPORT_STR": 0x0042,
    "EXPORT_STR_PAGE": 0x0043,
    "CLUSTER_STATUS": 0x0050,
    "CLUSTER_CHANGE": 0x0051,
    "BACKUP": 0x0052,
    "RELOAD_CHANNELS": 0x0053,
    "CHALLENGE": 0x0100,
    "HELLO": 0x0101,
}

# protocol/src/kinds.rs, KINDS: (request size, response size) of each kind a
# channel sends (0 for none; the JSON and backup answers are "1").
SIZES = {
    "PING": (0, 0),
    "CREATE_ACCOUNTS": (32, 32),
    "SUBMIT_TRANSFERS": (64, 64),
    "CONFIRM_STEP_UP": (24, 64),
    "CANCEL_TRANSFERS": (16, 64),
    "FINALIZE_PENDING": (32, 64),
    "LOOKUP_TRANSFERS": (16, 64),
    "LOOKUP_BALANCES": (16, 48),
    "SET_FX_RATES": (16, 32),
    "FX_QUOTE": (16, 48),
    "SET_CREDIT_LINES": (32, 32),
    "DISBURSE_LOANS": (48, 64),
    "REPAY_LOANS": (48, 64),
    "LOOKUP_LOANS": (16, 64),
    "RESOLVE_REVIEW": (24, 64),
    "SET_TIME": (16, 32),
    "EXPORT_STR": (16, 8),
    "EXPORT_STR_PAGE": (48, 48),
    "CLUSTER_STATUS": (0, 1),
    "CLUSTER_CHANGE": (144, 1),
    "BACKUP": (0, 1),
    "RELOAD_CHANNELS": (0, 1),
}


class KindsTest(unittest.TestCase):
    def test_numbers_are_the_rust_ones(self) -> None:
        self.assertEqual({k.name: int(k) for k in Kind}, RUST_KINDS)

    def test_every_channel_kind_has_a_row_with_the_contracts_sizes(self) -> None:
        self.assertEqual({k.name for k in KINDS}, set(SIZES))
        for name, (request, response) in SIZES.items():
            row = KINDS[Kind[name]]
            with self.subTest(kind=name):
                self.assertEqual(row.request.SIZE if row.request else 0, request)
                if row.answer in (AnswerBody.RECORDS, AnswerBody.STR_REPORT, AnswerBody.STR_PAGE):
                    self.assertEqual(row.response.SIZE if row.response else 0, response)
                else:
                    self.assertEqual(response, 1)
                    self.assertIsNone(row.response)

    def test_count_rules_and_roles(self) -> None:
        zero = {k.name for k, row in KINDS.items() if row.count is CountRule.ZERO}
        one = {k.name for k, row in KINDS.items() if row.count is CountRule.ONE}
        self.assertEqual(zero, {"PING", "CLUSTER_STATUS", "BACKUP", "RELOAD_CHANNELS"})
        self.assertEqual(one, {"EXPORT_STR", "EXPORT_STR_PAGE", "CLUSTER_CHANGE"})
        self.assertEqual(KINDS[Kind.EXPORT_STR_PAGE].roles, Role.REPORTING)
        self.assertIs(KINDS[Kind.EXPORT_STR_PAGE].answer, AnswerBody.STR_PAGE)
        self.assertEqual(KINDS[Kind.REPAY_LOANS].roles, Role.PAYMENTS | Role.LENDING)
        self.assertEqual(KINDS[Kind.LOOKUP_BALANCES].roles, Role(0), "any channel")
        self.assertEqual(KINDS[Kind.SET_TIME].roles, Role.OPERATOR)
        self.assertIsNone(spec(Kind.CHALLENGE), "only the switch sends CHALLENGE")
        self.assertIsNone(spec(Kind.HELLO), "HELLO is the handshake's, not a call")
        self.assertIsNone(spec(0x7777))

    def test_the_client_has_a_typed_call_for_every_kind(self) -> None:
        for kind in KINDS:
            with self.subTest(kind=kind.name):
                self.assertTrue(callable(getattr(Client, kind.name.lower(), None)), kind.name.lower())


if __name__ == "__main__":
    unittest.main()
