"""The Bot API's HTTP client: certificates verified as httpx does by default, with the
authorities read once per process, not at each start of the bot."""

from __future__ import annotations

import ssl

from bot.metrics import Metrics
from bot.telegram.request import MeteredRequest, tls_context


def test_clients_verify_certificates_with_one_shared_context() -> None:
    first, second = MeteredRequest(Metrics()), MeteredRequest(Metrics(), read_timeout=35)
    context = tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the authorities are loaded
    for request in (first, second):
        pool = request._client._transport._pool  # noqa: SLF001 (where httpx keeps it)
        assert pool._ssl_context is context  # noqa: SLF001
