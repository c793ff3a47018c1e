"""Makes the shared Waldur fixtures (tests/support/waldur.py) available to this directory.

tests/ is not a package and not on sys.path, so the support module is loaded by path here; a root
conftest with ``pytest_plugins = ["support.waldur"]`` (and "tests" on pythonpath) would make this unnecessary.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.waldur import (  # noqa: E402,F401
    make_client,
    standin,
    standin_2024,
    standin_any,
    standin_offering,
    waldur_client,
    waldur_client_any,
)
