"""The integration suites run on each database the bot supports (see tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import DATABASES


@pytest.fixture(params=DATABASES)
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
