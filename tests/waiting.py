"""Kept for the tests that import ``wait_for`` from here; it lives in :mod:`tests.support.waiting`."""

from tests.support.waiting import wait_for  # noqa: F401
