"""Against a live switch: every kind a single node serves, bad input, and
pipelining. Skipped unless ``HARBOUR_ADDR`` is set.

    harbour serve --data /tmp/pyclient-data --listen 127.0.0.1:7499 \\
        --metrics off --clock manual
    HARBOUR_ADDR=127.0.0.1:7499 python3 -m unittest \\
        discover -s clients/python/tests -t clients/python -p 'test_integration.py' -v

The switch runs without a configuration file, so channel 1 with the
development key has every role (``HARBOUR_CHANNEL`` and ``HARBOUR_KEY``
override them), and on ``--clock manual`` (SET_TIME is skipped otherwise).
Every id is new on each run (derived from the time), so runs can repeat on
the same data directory. SET_TIME moves the switch's clock a day forward
on each run.

Over TLS (optional): ``HARBOUR_TLS_ADDR`` of a switch configured with
``[tls]`` and ``HARBOUR_TLS_DIR``, a directory made by
``harbour certs dev --out DIR --channel 1 --channel 2``; see the README.
"""

import datetime
import io
import itertools
import os
import socket
import threading
import time
import unittest
from typing import List, Optional, Tuple

from harbour_client import (
    FX_POSITION,
    REMITTANCE_OUT,
    SETTLEMENT_IN,
    Account,
    AuthFailedError,
    BadLengthError,
    BalanceKey,
    BatchTooLargeError,
    Client,
    ClusterChange,
    ClusterOp,
    ConnectionClosedError,
    CreditLine,
    CreditLineFlags,
    Currency,
    Disburse,
    Finalize,
    FinalizeAction,
    ForbiddenError,
    FxRate,
    Holds,
    Kind,
    LoanState,
    MalformedError,
    Method,
    Outcome,
    QuoteRequest,
    RefusedError,
    Repay,
    ResultCode,
    Role,
    StepUp,
    StrFormat,
    StrPageRequest,
    StrReportError,
    StrWritten,
    TlsConfig,
    Transfer,
    TransferFlags,
    TransferResult,
    TransferState,
    UnknownKindError,
)
from harbour_client.crc32c import crc32c
from harbour_client.frame import ERROR_KIND, ErrorCode, FrameDecoder, Header, encode_frame, parse_error_body
from harbour_client.session import Challenge, Hello

ADDR = os.environ.get("HARBOUR_ADDR")
CHANNEL = int(os.environ.get("HARBOUR_CHANNEL", "1"))
KEY = os.environ.get("HARBOUR_KEY", "hksw-dev-key").encode()
TLS_ADDR = os.environ.get("HARBOUR_TLS_ADDR")
TLS_DIR = os.environ.get("HARBOUR_TLS_DIR")

HKD, USD, KWD, JPY = Currency.HKD, Currency.USD, Currency.KWD, Currency.JPY
DAY_MS = 86_400_000
HK_OFFSET_MS = 8 * 3_600_000

# Ids unique to this run: microseconds since the epoch, times 1,000 (a run
# uses far fewer than 1,000 ids), well inside u64 and clear of the system
# accounts. Transfer and loan ids share one space; all come from here.
_IDS = itertools.count(time.time_ns() // 1_000 * 1_000)


def new_id() -> int:
    return next(_IDS)


def hk_month(unix_ms: int) -> Tuple[int, int]:
    """The Hong Kong calendar month (UTC+8) of a switch time."""
    t = datetime.datetime.fromtimestamp((unix_ms + HK_OFFSET_MS) / 1000, tz=datetime.timezone.utc)
    return t.year, t.month


@unittest.skipUnless(ADDR, "set HARBOUR_ADDR=host:port of a switch (--clock manual) to run")
class LiveSwitchTest(unittest.TestCase):
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.client = Client.connect(ADDR, CHANNEL, KEY, timeout=30)  # type: ignore[arg-type]

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    # -- helpers ---------------------------------------------------------

    def accounts(self, n: int) -> List[int]:
        """``n`` new customer accounts in Hong Kong."""
        ids = [new_id() for _ in range(n)]
        results = self.client.create_accounts([Account(account_id=i, home_country=344, customer_ref=i) for i in ids])
        self.assertEqual([(r.key, r.code) for r in results], [(i, ResultCode.OK) for i in ids])
        return ids

    def deposit(self, account: int, amount: int, currency: int = HKD) -> TransferResult:
        """Money into ``account`` from SETTLEMENT_IN (a deposit is not judged by AML)."""
        t = Transfer(new_id(), SETTLEMENT_IN, account, amount, currency, currency)
        (r,) = self.client.submit_transfers([t])
        self.assertEqual((r.code, r.state), (ResultCode.OK, TransferState.POSTED))
        return r

    def transfer(self, debit: int, credit: int, amount: int, currency: int = HKD, **fields: int) -> TransferResult:
        t = Transfer(new_id(), debit, credit, amount, currency, fields.pop("credit_currency", currency), **fields)
        (r,) = self.client.submit_transfers([t])
        self.assertEqual(r.transfer_id, t.transfer_id)
        return r

    def balance(self, account: int, currency: int = HKD) -> Tuple[int, int]:
        (b,) = self.client.lookup_balances([BalanceKey(account, currency)])
        self.assertEqual(b.code, ResultCode.OK)
        return b.balance, b.held

    def switch_time_ms(self) -> int:
        """The switch's clock now (a new session's HELLO answer carries it)."""
        with Client.connect(ADDR, CHANNEL, KEY) as c:  # type: ignore[arg-type]
            return c.server_time_ms

    # -- session ---------------------------------------------------------

    def test_session_limits_and_ping(self) -> None:
        c = self.client
        c.ping()
        self.assertEqual(
            c.roles, Role.ACCOUNTS | Role.PAYMENTS | Role.LENDING | Role.TREASURY | Role.OPERATOR | Role.REPORTING
        )
        self.assertGreaterEqual(c.max_batch, 8189)
        self.assertGreaterEqual(c.max_in_flight, 64)
        self.assertEqual(c.limits.max_body, 1 << 20)

    def test_a_wrong_key_is_auth_failed(self) -> None:
        with self.assertRaises(AuthFailedError):
            Client.connect(ADDR, CHANNEL, KEY + b"x")  # type: ignore[arg-type]

    # -- accounts, deposits, transfers, balances --------------------------

    def test_accounts_deposit_and_balances(self) -> None:
        c = self.client
        a, b = self.accounts(2)
        again = c.create_accounts(
            [
                Account(account_id=a, home_country=344, customer_ref=a),  # the same: ALREADY_EXISTS
                Account(account_id=b, home_country=156, customer_ref=b),  # other fields: ACCOUNT_EXISTS
                Account(account_id=1000, home_country=344),  # a system id
                Account(account_id=new_id(), home_country=999),  # no such country
            ]
        )
        self.assertEqual(
            [r.code for r in again],
            [ResultCode.ALREADY_EXISTS, ResultCode.ACCOUNT_EXISTS, ResultCode.INVALID_ID, ResultCode.UNKNOWN_COUNTRY],
        )
        r = self.deposit(a, 100_000)
        self.assertEqual((r.debit_amount, r.credit_amount, r.rate_e9), (100_000, 100_000, 1_000_000_000))
        self.assertEqual(self.balance(a), (100_000, 0))
        self.assertEqual(self.balance(b), (0, 0))

    def test_transfers_resent_are_already_exists(self) -> None:
        c = self.client
        a, b = self.accounts(2)
        self.deposit(a, 100_000)
        t = Transfer(new_id(), a, b, 2_500, HKD, HKD, user_data=42)
        (first,) = c.submit_transfers([t])
        self.assertEqual((first.code, first.state), (ResultCode.OK, TransferState.POSTED))
        (again,) = c.submit_transfers([t])
        self.assertEqual((again.code, again.state), (ResultCode.ALREADY_EXISTS, TransferState.POSTED))
        self.assertEqual(again.debit_amount, 2_500)
        other = Transfer(t.transfer_id, a, b, 2_501, HKD, HKD, user_data=42)
        (conflict,) = c.submit_transfers([other])
        self.assertEqual(conflict.code, ResultCode.ID_CONFLICT)
        self.assertEqual(self.balance(a), (97_500, 0))
        self.assertEqual(self.balance(b), (2_500, 0))
        (looked,) = c.lookup_transfers([t.transfer_id])
        self.assertEqual(
            (looked.code, looked.state, looked.credit_amount), (ResultCode.OK, TransferState.POSTED, 2_500)
        )

    def test_pending_transfers_finalized_and_cancelled(self) -> None:
        c = self.client
        a, b = self.accounts(2)
        self.deposit(a, 100_000)
        held = [self.transfer(a, b, 1_000, flags=TransferFlags.PENDING) for _ in range(3)]
        for r in held:
            self.assertEqual((r.code, r.state, r.holds), (ResultCode.OK, TransferState.PENDING, Holds.CLIENT))
            self.assertGreater(r.hold_until_ms, 0)
        self.assertEqual(self.balance(a), (100_000, 3_000), "pending debits are held, not posted")
        post, void, cancel = (r.transfer_id for r in held)
        finalized = c.finalize_pending([Finalize(post, FinalizeAction.POST), Finalize(void, FinalizeAction.VOID)])
        self.assertEqual(
            [(r.code, r.state) for r in finalized],
            [(ResultCode.OK, TransferState.POSTED), (ResultCode.OK, TransferState.VOIDED)],
        )
        (cancelled,) = c.cancel_transfers([cancel])
        self.assertEqual((cancelled.code, cancelled.state), (ResultCode.OK, TransferState.VOIDED))
        # No longer pending: NOT_PENDING with the transfer's state.
        (late,) = c.cancel_transfers([post])
        self.assertEqual((late.code, late.state), (ResultCode.NOT_PENDING, TransferState.POSTED))
        (late,) = c.finalize_pending([Finalize(void, FinalizeAction.POST)])
        self.assertEqual((late.code, late.state), (ResultCode.NOT_PENDING, TransferState.VOIDED))
        states = [r.state for r in c.lookup_transfers([post, void, cancel])]
        self.assertEqual(states, [TransferState.POSTED, TransferState.VOIDED, TransferState.VOIDED])
        self.assertEqual(self.balance(a), (99_000, 0))
        self.assertEqual(self.balance(b), (1_000, 0))

    def test_step_up_and_manual_review(self) -> None:
        c = self.client
        a, b = self.accounts(2)
        self.deposit(a, 100_000)
        # AML level 2: a remittance to a high-risk country waits for SMS_OTP.
        sms = self.transfer(a, REMITTANCE_OUT, 1_000, destination_country=408)
        self.assertEqual((sms.state, sms.holds), (TransferState.PENDING, Holds.SMS_OTP))
        (wrong,) = c.confirm_step_up([StepUp(sms.transfer_id, Method.FACE, Outcome.PASS)])
        self.assertEqual(wrong.code, ResultCode.WRONG_METHOD)
        (passed,) = c.confirm_step_up([StepUp(sms.transfer_id, Method.SMS_OTP, Outcome.PASS)])
        self.assertEqual((passed.code, passed.state), (ResultCode.OK, TransferState.POSTED))
        # No direct KWD->HKD rate: held for an operator's MANUAL_REVIEW.
        self.deposit(a, 50_000, KWD)
        review = self.transfer(a, b, 1_000, KWD)
        self.assertEqual((review.state, review.holds), (TransferState.PENDING, Holds.MANUAL_REVIEW))
        (channel,) = c.confirm_step_up([StepUp(review.transfer_id, Method.MANUAL_REVIEW, Outcome.PASS)])
        self.assertEqual(channel.code, ResultCode.FORBIDDEN, "only an operator resolves a review")
        (method,) = c.resolve_review([StepUp(review.transfer_id, Method.FACE, Outcome.PASS)])
        self.assertEqual(method.code, ResultCode.INVALID_FIELD)
        (resolved,) = c.resolve_review([StepUp(review.transfer_id, Method.MANUAL_REVIEW, Outcome.PASS)])
        self.assertEqual((resolved.code, resolved.state), (ResultCode.OK, TransferState.POSTED))
        self.assertEqual(self.balance(b, KWD), (1_000, 0))
        # A FAIL voids.
        failed = self.transfer(a, REMITTANCE_OUT, 500, destination_country=364)
        (voided,) = c.confirm_step_up([StepUp(failed.transfer_id, Method.SMS_OTP, Outcome.FAIL)])
        self.assertEqual(voided.state, TransferState.VOIDED)

    # -- FX ----------------------------------------------------------------

    def test_fx_rates_quote_and_a_cross_currency_transfer(self) -> None:
        c = self.client
        results = c.set_fx_rates(
            [
                FxRate(HKD, USD, 128_000_000),  # 0.128 USD per HKD
                FxRate(USD, HKD, 7_800_000_000),  # 7.8 HKD per USD
                FxRate(HKD, HKD, 1_000_000_000),  # a currency to itself
                FxRate(HKD, USD, 0),  # a zero rate
                FxRate(HKD, 999, 1),  # no such currency
            ]
        )
        self.assertEqual([r.key for r in results], [0, 1, 2, 3, 4], "keyed by the record's index")
        self.assertEqual(
            [r.code for r in results],
            [
                ResultCode.OK,
                ResultCode.OK,
                ResultCode.INVALID_FIELD,
                ResultCode.INVALID_FIELD,
                ResultCode.UNKNOWN_CURRENCY,
            ],
        )
        a, b = self.accounts(2)
        self.deposit(a, 1_000_000)
        (quote,) = c.fx_quote([QuoteRequest(HKD, USD, 0, 100_000)])
        self.assertEqual(quote.code, ResultCode.OK)
        self.assertEqual((quote.rate_e9, quote.debit_amount, quote.credit_amount), (128_000_000, 100_000, 12_800))
        self.assertGreater(quote.expires_at_ms, 0)
        # The quote converts one transfer of that pair, amount and side.
        (other_amount,) = c.submit_transfers([Transfer(new_id(), a, b, 99_999, HKD, USD, fx_quote_id=quote.quote_id)])
        self.assertEqual(other_amount.code, ResultCode.QUOTE_INVALID)
        fx = self.transfer(a, b, 100_000, HKD, credit_currency=USD, fx_quote_id=quote.quote_id)
        self.assertEqual((fx.code, fx.state), (ResultCode.OK, TransferState.POSTED))
        self.assertEqual((fx.debit_amount, fx.credit_amount, fx.rate_e9), (100_000, 12_800, 128_000_000))
        spent = self.transfer(a, b, 100_000, HKD, credit_currency=USD, fx_quote_id=quote.quote_id)
        self.assertEqual(spent.code, ResultCode.QUOTE_INVALID, "a quote serves one transfer")
        self.assertEqual(self.balance(b, USD), (12_800, 0))
        self.assertEqual(self.balance(a, HKD), (900_000, 0))
        # At the current rate, amount on the credit side: the debit rounds up.
        by_credit = self.transfer(a, b, 1_001, HKD, credit_currency=USD, flags=TransferFlags.AMOUNT_IN_CREDIT_CURRENCY)
        self.assertEqual(
            (by_credit.code, by_credit.credit_amount, by_credit.debit_amount), (ResultCode.OK, 1_001, 7_821)
        )
        # No KWD rate at all, and no cross through HKD without one.
        (none,) = c.fx_quote([QuoteRequest(KWD, JPY, 0, 1_000)])
        self.assertEqual(none.code, ResultCode.NO_FX_RATE)

    # -- credit --------------------------------------------------------------

    def test_credit_line_loan_disbursed_and_repaid(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        lines = c.set_credit_lines(
            [
                CreditLine(a, HKD, CreditLineFlags.AUTO_MICRO_CREDIT, 1000, 2_000_000, 50_000),
                CreditLine(a, USD, 0, 4801, 1_000, 0),  # above the 48% ceiling
                CreditLine(new_id(), HKD, 0, 1000, 1_000, 0),  # no such account
            ]
        )
        self.assertEqual(
            [r.code for r in lines], [ResultCode.OK, ResultCode.INVALID_FIELD, ResultCode.ACCOUNT_NOT_FOUND]
        )
        loan_id = new_id()
        disburse = Disburse(loan_id, a, HKD, 30, 1_000_000)
        (loan,) = c.disburse_loans([disburse])
        self.assertEqual((loan.code, loan.state, loan.loan_id), (ResultCode.OK, LoanState.ACTIVE, loan_id))
        self.assertEqual((loan.apr_bps, loan.ear_bps, loan.principal_outstanding), (1000, 1052, 1_000_000))
        (again,) = c.disburse_loans([disburse])
        self.assertEqual((again.code, again.state), (ResultCode.ALREADY_EXISTS, LoanState.ACTIVE))
        (too_much,) = c.disburse_loans([Disburse(new_id(), a, HKD, 30, 1_000_001)])
        self.assertEqual(too_much.code, ResultCode.CREDIT_LIMIT_EXCEEDED)
        (no_line,) = c.disburse_loans([Disburse(new_id(), a, USD, 30, 100)])
        self.assertEqual(no_line.code, ResultCode.NO_CREDIT_LINE)
        (b,) = c.lookup_balances([BalanceKey(a, HKD)])
        self.assertEqual((b.balance, b.credit_available, b.loans_outstanding), (1_000_000, 1_000_000, 1_000_000))
        # A payment 200.00 short draws a micro-loan for exactly the shortfall.
        (payee,) = self.accounts(1)
        auto = self.transfer(a, payee, 1_020_000, flags=TransferFlags.AUTO_CREDIT)
        self.assertEqual(
            (auto.code, auto.state, auto.auto_credit_amount), (ResultCode.OK, TransferState.POSTED, 20_000)
        )
        (micro,) = c.lookup_loans([auto.transfer_id])
        self.assertEqual((micro.state, micro.principal_outstanding), (LoanState.ACTIVE, 20_000))
        # Repay the first loan: part, too much, the rest; then it is REPAID.
        self.deposit(a, 2_000_000)
        (part,) = c.repay_loans([Repay(new_id(), loan_id, 400_000)])
        self.assertEqual((part.code, part.state, part.loan_id), (ResultCode.OK, LoanState.ACTIVE, loan_id))
        (now,) = c.lookup_loans([loan_id])
        owed = now.principal_outstanding + now.interest_accrued
        (over,) = c.repay_loans([Repay(new_id(), loan_id, owed + 1)])
        self.assertEqual(over.code, ResultCode.OVERPAYMENT)
        repayment = Repay(new_id(), loan_id, owed)
        (paid,) = c.repay_loans([repayment])
        self.assertEqual((paid.code, paid.state, paid.principal_outstanding), (ResultCode.OK, LoanState.REPAID, 0))
        (resent,) = c.repay_loans([repayment])
        self.assertEqual(resent.code, ResultCode.ALREADY_EXISTS)
        (unknown,) = c.lookup_loans([new_id()])
        self.assertEqual(unknown.code, ResultCode.LOAN_NOT_FOUND)
        # Loan and transfer ids share one space, both ways.
        deposit = self.deposit(a, 100)
        (loan_clash,) = c.disburse_loans([Disburse(deposit.transfer_id, a, HKD, 30, 100)])
        self.assertEqual(loan_clash.code, ResultCode.ID_CONFLICT)
        (transfer_clash,) = c.submit_transfers([Transfer(loan_id, SETTLEMENT_IN, a, 100, HKD, HKD)])
        self.assertEqual(transfer_clash.code, ResultCode.ID_CONFLICT)

    # -- time ----------------------------------------------------------------

    def test_set_time_moves_the_manual_clock(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        c.set_credit_lines([CreditLine(a, HKD, 0, 1000, 1_000_000, 0)])
        loan_id = new_id()
        (loan,) = c.disburse_loans([Disburse(loan_id, a, HKD, 30, 1_000_000)])
        start = loan.disbursed_at_ms
        forward = c.set_time(start + DAY_MS)
        if forward.code == ResultCode.CLOCK_NOT_MANUAL:
            self.skipTest("the switch is not on --clock manual")
        self.assertEqual(forward.code, ResultCode.OK)
        self.assertEqual(self.switch_time_ms(), start + DAY_MS)
        back = c.set_time(start)
        self.assertEqual(back.code, ResultCode.TIME_BACKWARDS)
        # One whole day: 1,000,000 x 1000 bps / 10,000 / 365 = 273.97, so 274.
        (now,) = c.lookup_loans([loan_id])
        self.assertEqual((now.principal_outstanding, now.interest_accrued), (1_000_000, 274))

    # -- STR -------------------------------------------------------------------

    def test_str_export_csv_and_xml(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        self.deposit(a, 100_000)
        case = self.transfer(a, REMITTANCE_OUT, 1_000, destination_country=408)
        self.assertEqual(case.holds, Holds.SMS_OTP)
        year, month = hk_month(self.switch_time_ms())
        csv = c.export_str(year, month, StrFormat.CSV)
        self.assertEqual((csv.header.code, csv.header.format), (ResultCode.OK, StrFormat.CSV))
        self.assertEqual(csv.header.report_len, len(csv.report))
        lines = csv.text.split("\r\n")
        self.assertTrue(lines[0].startswith("transfer_id,submitted_at,account,customer_ref,counterparty"), lines[0])
        ours = [line.split(",") for line in lines[1:] if line.startswith(f"{case.transfer_id},")]
        self.assertEqual(len(ours), 1, "our case, once")
        columns = dict(zip(lines[0].split(","), ours[0]))
        self.assertEqual(columns["account"], str(a))
        self.assertEqual(columns["destination_country"], "408")
        self.assertEqual(columns["holds"], "SMS_OTP")
        self.assertEqual(columns["outcome"], "pending")
        xml = c.export_str(year, month, StrFormat.XML)
        self.assertEqual(xml.header.code, ResultCode.OK)
        self.assertTrue(xml.text.startswith("<?xml"))
        self.assertIn(f"<transfer_id>{case.transfer_id}</transfer_id>", xml.text)
        nothing = c.export_str(2000, 1, StrFormat.CSV)
        self.assertEqual((nothing.header.code, nothing.report), (ResultCode.NOTHING_TO_REPORT, b""))
        bad = c.export_str(year, 13, StrFormat.CSV)
        self.assertEqual(bad.header.code, ResultCode.INVALID_FIELD)
        c.cancel_transfers([case.transfer_id])

    def test_str_pages_of_one_case_are_export_strs_report(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        self.deposit(a, 100_000)
        cases = [self.transfer(a, REMITTANCE_OUT, 1_000 + i, destination_country=408) for i in range(3)]
        self.assertTrue(all(r.holds == Holds.SMS_OTP for r in cases))
        year, month = hk_month(self.switch_time_ms())
        # The clock is manual and nothing is submitted in between: the pages
        # and EXPORT_STR are made at the same switch time.
        for format in (StrFormat.CSV, StrFormat.XML):
            with self.subTest(format=format.name):
                whole = c.export_str(year, month, format)
                self.assertEqual(whole.header.code, ResultCode.OK)
                pages = list(c.export_str_pages(year, month, format, limit=1))
                self.assertEqual(b"".join(p.page for p in pages), whole.report)
                self.assertEqual([p.last for p in pages], [False] * (len(pages) - 1) + [True])
                self.assertTrue(all(p.header.rows == 1 for p in pages), "one case a page")
                self.assertEqual({p.header.cases for p in pages}, {len(pages)}, "a page a case")
                self.assertEqual({p.header.as_of_ms for p in pages}, {pages[0].header.as_of_ms})
                self.assertEqual({p.header.format for p in pages}, {format})
                self.assertGreaterEqual(len(pages), len(cases))
                for r in cases:
                    self.assertIn(str(r.transfer_id).encode(), whole.report)
                out = io.BytesIO()
                written = c.write_str_report(out, year, month, format, limit=2)
                self.assertEqual(written, StrWritten(len(pages), len(whole.report)))
                self.assertEqual(out.getvalue(), whole.report)
        # The first page by hand: as_of_ms 0 is the switch's now.
        first = c.export_str_page(StrPageRequest(year, month, StrFormat.CSV, limit=1))
        self.assertEqual(first.header.code, ResultCode.OK)
        self.assertEqual(first.header.as_of_ms, self.switch_time_ms())
        self.assertTrue(first.text.startswith("transfer_id,submitted_at,"))
        c.cancel_transfers([r.transfer_id for r in cases])

    def test_str_page_codes_and_errors(self) -> None:
        c = self.client
        year, month = hk_month(self.switch_time_ms())
        for bad in (
            StrPageRequest(year, month, StrFormat.CSV, limit=0),
            StrPageRequest(year, month, StrFormat.CSV, limit=100_001),
            StrPageRequest(year, 13, StrFormat.XML, limit=1),
            StrPageRequest(year, 0, StrFormat.XML, limit=1),
        ):
            with self.subTest(month=bad.month, limit=bad.limit):
                answer = c.export_str_page(bad)
                self.assertEqual((answer.header.code, answer.page), (ResultCode.INVALID_FIELD, b""))
        with self.assertRaises(StrReportError) as e:
            list(c.export_str_pages(year, month, StrFormat.CSV, limit=0))
        self.assertEqual(e.exception.code, ResultCode.INVALID_FIELD)
        nothing = c.export_str_page(StrPageRequest(2000, 1, StrFormat.CSV, limit=10))
        self.assertEqual((nothing.header.code, nothing.page), (ResultCode.NOTHING_TO_REPORT, b""))
        out = io.BytesIO()
        self.assertIsNone(c.write_str_report(out, 2000, 1))
        self.assertEqual(out.getvalue(), b"")
        # An unknown format never reaches the engine: MALFORMED, as EXPORT_STR's.
        with self.assertRaises(MalformedError):
            c.export_str_page(StrPageRequest(year, month, 3, limit=1))
        with self.assertRaises(MalformedError):
            c.export_str(year, month, 3)
        c.ping()

    # -- bad input -------------------------------------------------------------

    def test_bad_records_get_their_own_codes(self) -> None:
        c = self.client
        a, b = self.accounts(2)
        self.deposit(a, 10_000)
        missing = new_id()
        cases = [
            (Transfer(0, a, b, 100, HKD, HKD), ResultCode.INVALID_ID),
            (Transfer(new_id(), missing, b, 100, HKD, HKD), ResultCode.DEBIT_ACCOUNT_NOT_FOUND),
            (Transfer(new_id(), a, missing, 100, HKD, HKD), ResultCode.CREDIT_ACCOUNT_NOT_FOUND),
            (Transfer(new_id(), a, a, 100, HKD, HKD), ResultCode.SAME_ACCOUNT),
            (Transfer(new_id(), FX_POSITION, b, 100, HKD, HKD), ResultCode.FORBIDDEN),
            (Transfer(new_id(), a, b, 0, HKD, HKD), ResultCode.INVALID_AMOUNT),
            (Transfer(new_id(), a, b, 100, 999, 999), ResultCode.UNKNOWN_CURRENCY),
            (Transfer(new_id(), a, REMITTANCE_OUT, 100, HKD, HKD, destination_country=999), ResultCode.UNKNOWN_COUNTRY),
            (Transfer(new_id(), a, b, 100, HKD, HKD, fx_quote_id=new_id()), ResultCode.QUOTE_INVALID),
            (Transfer(new_id(), a, b, 10_001, HKD, HKD), ResultCode.INSUFFICIENT_FUNDS),
            (Transfer(new_id(), a, b, 10_000, HKD, HKD), ResultCode.OK),
        ]
        results = c.submit_transfers([t for t, _ in cases])
        self.assertEqual([r.code for r in results], [code for _, code in cases])
        for r in results[:-1]:
            self.assertEqual(r.state, TransferState.NONE, "a rejected transfer is not stored")
        self.assertEqual(self.balance(a), (0, 0), "each record succeeds or fails on its own")
        (no_account,) = c.lookup_balances([BalanceKey(missing, HKD)])
        self.assertEqual(no_account.code, ResultCode.ACCOUNT_NOT_FOUND)
        (no_transfer,) = c.lookup_transfers([missing])
        self.assertEqual(no_transfer.code, ResultCode.TRANSFER_NOT_FOUND)
        (no_cancel,) = c.cancel_transfers([missing])
        self.assertEqual(no_cancel.code, ResultCode.TRANSFER_NOT_FOUND)
        (no_repay,) = c.repay_loans([Repay(new_id(), missing, 1)])
        self.assertEqual(no_repay.code, ResultCode.LOAN_NOT_FOUND)

    def test_bad_frames_get_error_codes_and_the_connection_stays(self) -> None:
        c = self.client
        transfer = Transfer(new_id(), SETTLEMENT_IN, self.accounts(1)[0], 100, HKD, HKD)
        good = transfer.encode()
        undefined_flag = good[:46] + (8).to_bytes(2, "little") + good[48:]
        cases = [
            (0x7777, 0, b"", ErrorCode.UNKNOWN_KIND),
            (Kind.SUBMIT_TRANSFERS, 1, good[:63], ErrorCode.BAD_LENGTH),
            (Kind.PING, 1, b"", ErrorCode.BAD_LENGTH),
            (Kind.EXPORT_STR, 0, b"", ErrorCode.BAD_LENGTH),
            (Kind.EXPORT_STR_PAGE, 0, b"", ErrorCode.BAD_LENGTH),
            (Kind.EXPORT_STR_PAGE, 2, bytes(96), ErrorCode.BAD_LENGTH),
            (Kind.LOOKUP_TRANSFERS, c.max_batch + 1, bytes(16) * (c.max_batch + 1), ErrorCode.BATCH_TOO_LARGE),
            # MALFORMED refuses the whole frame: the good transfer is not applied.
            (Kind.SUBMIT_TRANSFERS, 2, good + undefined_flag, ErrorCode.MALFORMED),
            (Kind.CREATE_ACCOUNTS, 1, Account(new_id(), kind=2, home_country=344).encode(), ErrorCode.MALFORMED),
            (Kind.CONFIRM_STEP_UP, 1, StepUp(1, 4, 1).encode(), ErrorCode.MALFORMED),
            (Kind.HELLO, 1, bytes(56), ErrorCode.MALFORMED),  # a second HELLO
        ]
        for kind, count, body, code in cases:
            with self.subTest(kind=hex(kind), code=code.name):
                with self.assertRaises(RefusedError) as e:
                    c.request_raw(kind, count, body)
                self.assertEqual(e.exception.code, code, e.exception)
        (looked,) = c.lookup_transfers([transfer.transfer_id])
        self.assertEqual(looked.code, ResultCode.TRANSFER_NOT_FOUND, "nothing of a MALFORMED frame applied")
        with self.assertRaises(BatchTooLargeError):
            c.request_raw(Kind.LOOKUP_TRANSFERS, c.max_batch + 1, bytes(16) * (c.max_batch + 1))
        with self.assertRaises(BadLengthError):
            c.request_raw(Kind.SUBMIT_TRANSFERS, 2, good)
        c.ping()
        self.assertFalse(c.closed)

    def test_the_operators_cluster_kinds_on_a_single_node(self) -> None:
        c = self.client
        for call in (c.cluster_status, c.backup):
            with self.assertRaises(UnknownKindError) as e:
                call()
            self.assertIn("not a cluster node", e.exception.detail)
        with self.assertRaises(UnknownKindError):
            c.cluster_change(ClusterChange(2, ClusterOp.ADD, "127.0.0.1:7402", "127.0.0.1:7502"))
        with self.assertRaises(MalformedError):
            c.cluster_change(ClusterChange(2, 3, "127.0.0.1:7402", "127.0.0.1:7502"))
        with self.assertRaises(MalformedError):
            c.cluster_change(ClusterChange(2, ClusterOp.REMOVE, "127.0.0.1:7402", ""))

    def test_reload_channels_without_a_configuration_file(self) -> None:
        try:
            answer = self.client.reload_channels()
        except UnknownKindError as e:
            self.skipTest(f"this switch predates RELOAD_CHANNELS ({e.detail})")
        # Without a configuration file there is nothing to read again.
        self.assertEqual(answer.get("reloaded"), False, answer)
        self.assertIn("error", answer)

    def test_errors_that_close_the_connection(self) -> None:
        # BAD_MAGIC: request id 0, whatever follows.
        sock, decoder = raw_session(authenticated=True)
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(read_error(sock, decoder), (ErrorCode.BAD_MAGIC, 0))
        self.assertTrue(closed_after(sock))
        # BAD_VERSION and BAD_CHECKSUM echo the request id.
        sock, decoder = raw_session(authenticated=True)
        frame = bytearray(encode_frame(Kind.PING, 0, 41))
        frame[4] = 2
        sock.sendall(bytes(frame))
        self.assertEqual(read_error(sock, decoder), (ErrorCode.BAD_VERSION, 41))
        self.assertTrue(closed_after(sock))
        sock, decoder = raw_session(authenticated=True)
        frame = bytearray(encode_frame(Kind.LOOKUP_TRANSFERS, 1, 42, bytes(16)))
        frame[-1] ^= 1  # the body no longer matches its CRC
        sock.sendall(bytes(frame))
        self.assertEqual(read_error(sock, decoder), (ErrorCode.BAD_CHECKSUM, 42))
        self.assertTrue(closed_after(sock))
        # FRAME_TOO_LARGE: refused on the header alone.
        sock, decoder = raw_session(authenticated=True)
        sock.sendall(huge_header(43, (1 << 20) + 16))
        self.assertEqual(read_error(sock, decoder), (ErrorCode.FRAME_TOO_LARGE, 43))
        self.assertTrue(closed_after(sock))
        # NOT_AUTHENTICATED: anything but HELLO first.
        sock, decoder = raw_session(authenticated=False)
        sock.sendall(encode_frame(Kind.PING, 0, 44))
        self.assertEqual(read_error(sock, decoder), (ErrorCode.NOT_AUTHENTICATED, 44))
        self.assertTrue(closed_after(sock))

    # -- batching and pipelining ----------------------------------------------

    def test_pipelining_100_requests_in_flight(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        transfers = [Transfer(new_id(), SETTLEMENT_IN, a, 100 + i, HKD, HKD) for i in range(100)]
        # All 100 leave before any answer is read; answers may come in any order.
        pending = [c.send(Kind.SUBMIT_TRANSFERS, [t]) for t in transfers]
        self.assertGreater(c.in_flight, 1, "requests wait for their answers together, not one by one")
        self.assertEqual(len({p.request_id for p in pending}), 100)
        for t, p in zip(transfers, pending):
            (r,) = p.result()
            self.assertEqual((r.transfer_id, r.code, r.credit_amount), (t.transfer_id, ResultCode.OK, t.amount))
        self.assertEqual(self.balance(a), (sum(t.amount for t in transfers), 0))
        self.assertEqual(c.in_flight, 0)

    def test_more_than_max_in_flight_waits_for_places_and_is_never_refused(self) -> None:
        c = self.client
        n = c.max_in_flight * 3
        pending = [c.send(Kind.PING) for _ in range(n)]
        for p in pending:
            self.assertIsNone(p.result())

    def test_threads_share_the_connection(self) -> None:
        c = self.client
        ids = self.accounts(4)
        for a in ids:
            self.deposit(a, 1_000)
        errors: List[BaseException] = []

        def work(account: int) -> None:
            try:
                for _ in range(25):
                    (b,) = c.lookup_balances([BalanceKey(account, HKD)])
                    assert (b.account_id, b.balance) == (account, 1_000), b
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(a,)) for a in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_a_long_list_is_split_at_max_batch(self) -> None:
        c = self.client
        (a,) = self.accounts(1)
        self.deposit(a, 7)
        n = c.max_batch * 2 + 5
        balances = c.lookup_balances([BalanceKey(a, HKD)] * n)
        self.assertEqual(len(balances), n)
        self.assertTrue(all(b.balance == 7 for b in balances))


def raw_session(authenticated: bool) -> Tuple[socket.socket, FrameDecoder]:
    """A socket that has read CHALLENGE (and said HELLO, if asked), for
    frames the client would never send."""
    assert ADDR
    host, _, port = ADDR.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    decoder = FrameDecoder(1 << 20)
    header, body = read_frame(sock, decoder)
    assert header.kind == Kind.CHALLENGE, header
    if authenticated:
        challenge = Challenge.decode(body)
        hello = Hello.new(CHANNEL, KEY, challenge.server_nonce, os.urandom(16))
        sock.sendall(encode_frame(Kind.HELLO, 1, 0, hello.encode()))
        header, _ = read_frame(sock, decoder)
        assert header.kind == Kind.HELLO | 0x8000, header
    return sock, decoder


def read_frame(sock: socket.socket, decoder: FrameDecoder) -> Tuple[Header, bytes]:
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        data = sock.recv(65536)
        if not data:
            raise ConnectionClosedError("closed")
        decoder.feed(data)


def read_error(sock: socket.socket, decoder: FrameDecoder) -> Tuple[Optional[int], int]:
    header, body = read_frame(sock, decoder)
    assert header.kind == ERROR_KIND, header
    parsed = parse_error_body(body)
    assert parsed is not None
    return parsed[0], header.request_id


def huge_header(request_id: int, body_len: int) -> bytes:
    """A LOOKUP_TRANSFERS header claiming ``body_len`` bytes (none follow)."""
    head = b"HKSW" + (1).to_bytes(2, "little") + int(Kind.LOOKUP_TRANSFERS).to_bytes(2, "little")
    head += body_len.to_bytes(4, "little") + (body_len // 16).to_bytes(4, "little")
    head += request_id.to_bytes(8, "little") + (1).to_bytes(4, "little")
    return head + crc32c(head).to_bytes(4, "little")


def closed_after(sock: socket.socket) -> bool:
    """Whether the switch closes the connection (within the socket's timeout)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


@unittest.skipUnless(TLS_ADDR and TLS_DIR, "set HARBOUR_TLS_ADDR and HARBOUR_TLS_DIR to run over TLS")
class LiveTlsTest(unittest.TestCase):
    def tls(self, channel: int) -> TlsConfig:
        d = TLS_DIR or ""
        return TlsConfig(
            ca_file=os.path.join(d, "ca.pem"),
            cert_file=os.path.join(d, f"channel-{channel}.pem"),
            key_file=os.path.join(d, f"channel-{channel}.key"),
        )

    def test_mutual_tls_session(self) -> None:
        with Client.connect(TLS_ADDR, CHANNEL, KEY, tls=self.tls(CHANNEL)) as c:  # type: ignore[arg-type]
            c.ping()
            pending = [c.send(Kind.PING) for _ in range(200)]
            for p in pending:
                p.result()
            (b,) = c.lookup_balances([BalanceKey(SETTLEMENT_IN, HKD)])
            self.assertEqual(b.code, ResultCode.OK)

    def test_another_channels_certificate_is_auth_failed(self) -> None:
        other = os.path.join(TLS_DIR or "", "channel-2.pem")
        if CHANNEL == 2 or not os.path.exists(other):
            self.skipTest("needs channel-2.pem beside channel 1's")
        with self.assertRaises(AuthFailedError) as e:
            Client.connect(TLS_ADDR, CHANNEL, KEY, tls=self.tls(2))  # type: ignore[arg-type]
        self.assertIn("certificate", e.exception.detail)

    def test_plain_tcp_to_a_tls_listener_gets_nothing(self) -> None:
        with self.assertRaises((ConnectionClosedError, TimeoutError)):
            Client.connect(TLS_ADDR, CHANNEL, KEY, connect_timeout=5)  # type: ignore[arg-type]

    def test_a_channel_without_the_role_is_forbidden(self) -> None:
        limited = os.environ.get("HARBOUR_TLS_CHANNEL2_KEY")
        if not limited:
            self.skipTest("set HARBOUR_TLS_CHANNEL2_KEY to channel 2's key (a channel without ACCOUNTS)")
        with Client.connect(TLS_ADDR, 2, limited, tls=self.tls(2)) as c:  # type: ignore[arg-type]
            self.assertFalse(c.roles & Role.ACCOUNTS)
            with self.assertRaises(ForbiddenError) as e:
                c.create_accounts([Account(new_id(), home_country=344)])
            self.assertEqual(e.exception.name, "FORBIDDEN")
            # REPORTING is enough for the paged STR (a month without cases is None).
            year, month = hk_month(c.server_time_ms)
            written = c.write_str_report(io.BytesIO(), year, month, limit=1)
            self.assertTrue(written is None or written.cases >= 1, written)
            c.ping()


if __name__ == "__main__":
    unittest.main()
