"""A local stand-in for the Waldur Mastermind marketplace API, for the tests and the demo.

Run it with ``python -m waldur_standin --port 8080 --profile 8|2024``; use it from tests through
``waldur_standin.testing.StandIn``. ``create_app(profile)`` builds the aiohttp application.
"""

from .app import create_app
from .store import ApiError, Store

__all__ = ["ApiError", "Store", "create_app"]
