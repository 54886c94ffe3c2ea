"""Typed errors: one exception class per ERROR code, carrying its name and detail."""

import unittest
from dataclasses import dataclass

from harbour_client import errors
from harbour_client.frame import ErrorCode
from harbour_client.records import Record


class ErrorsTest(unittest.TestCase):
    def test_every_code_has_its_own_class(self) -> None:
        classes = set()
        for code in ErrorCode:
            e = errors.refused(code, "detail", 7)
            self.assertIsInstance(e, errors.RefusedError)
            self.assertIsInstance(e, errors.HarbourError)
            self.assertIsNot(type(e), errors.RefusedError, code.name)
            # BUSY -> BusyError, NOT_LEADER -> NotLeaderError, ...
            self.assertEqual(type(e).__name__, code.name.title().replace("_", "") + "Error")
            self.assertEqual((e.code, e.name, e.detail, e.request_id), (code, code.name, "detail", 7))
            self.assertEqual(e.closes, code.closes)
            classes.add(type(e))
        self.assertEqual(len(classes), len(ErrorCode))

    def test_the_message_names_the_code(self) -> None:
        self.assertEqual(
            str(errors.refused(ErrorCode.BUSY, "shard queue full")), "refused: BUSY (12): shard queue full"
        )
        unknown = errors.refused(77, "?")
        self.assertIs(type(unknown), errors.RefusedError)
        self.assertEqual(unknown.name, "?")

    def test_not_leader_names_the_leader(self) -> None:
        named = errors.refused(ErrorCode.NOT_LEADER, "10.0.0.3:7400")
        assert isinstance(named, errors.NotLeaderError)
        self.assertEqual(named.leader, "10.0.0.3:7400")
        unknown = errors.refused(ErrorCode.NOT_LEADER, "")
        assert isinstance(unknown, errors.NotLeaderError)
        self.assertIsNone(unknown.leader, "no leader known: an election is under way")

    def test_timeouts_and_closes_are_the_builtin_kinds_too(self) -> None:
        self.assertTrue(issubclass(errors.RequestTimeoutError, TimeoutError))
        self.assertTrue(issubclass(errors.ConnectionClosedError, ConnectionError))


class RecordLayoutCheckTest(unittest.TestCase):
    def test_a_layout_that_does_not_add_up_is_refused_when_the_class_is_made(self) -> None:
        with self.assertRaises(TypeError):

            @dataclass
            class TooShort(Record):
                a: int = 0
                SIZE = 16
                LAYOUT = (("a", "u64"),)

        with self.assertRaises(TypeError):

            @dataclass
            class Misnamed(Record):
                a: int = 0
                SIZE = 8
                LAYOUT = (("b", "u64"),)


if __name__ == "__main__":
    unittest.main()
