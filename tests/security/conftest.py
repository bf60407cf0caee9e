"""Fixtures of the security tests: throwaway TLS material."""

import pytest

from tests.security.certs import make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """CA, server (127.0.0.1, localhost) and client certificates the private servers trust."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory):
    """A second, unrelated CA: what a man in the middle (or a wrong ca setting) looks like."""
    return make_certs(tmp_path_factory.mktemp("other-certs"), prefix="other-")
