"""The quantize jobs' bot tests run on each database the bot supports, as the integration suites
do (a module may narrow it)."""

from __future__ import annotations

import pytest

from tests.conftest import DATABASES


@pytest.fixture(params=DATABASES)
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
