"""The one retry delay every retry loop uses."""

from salt_engine_lib import backoff


def test_delay_doubles_from_the_first_up_to_the_cap():
    assert [backoff.delay(attempt) for attempt in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_success_starts_again_from_the_first_delay():
    retries = backoff.Backoff()
    assert [retries.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    retries.reset()
    assert retries.next_delay() == 0.5
