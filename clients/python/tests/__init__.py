"""Tests of the Python client: unit tests that need no switch, and
``test_integration`` against a live one (``HARBOUR_ADDR``)."""

import os
import sys

# The package under test is the one beside this directory, however the
# tests are started.
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
