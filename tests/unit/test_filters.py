from salt_engine_lib import config
from salt_engine_lib.filters import EventFilter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_filter(**overrides):
    clock = FakeClock()
    return EventFilter(config.load(overrides), clock=clock), clock


def test_defaults_keep_job_publishes_and_returns():
    events, _ = make_filter()
    assert events.accept("salt/job/20261125120000000001/new", {"fun": "test.ping"})
    assert events.accept("salt/job/20261125120000000001/ret/m1", {"fun": "test.ping", "return": True})
    assert events.accept("salt/run/20261125120000000002/ret", {"fun": "runner.test.arg"})
    assert events.accepted == 3 and not events.dropped


def test_defaults_drop_redundant_traffic_and_count_by_reason():
    events, _ = make_filter()
    assert not events.accept("salt/auth", {"id": "m1", "act": "accept"})
    assert not events.accept("minion_start", {"id": "m1"})
    assert not events.accept("salt/job/20261125120000000003/ret/m1", {"fun": "saltutil.find_job", "return": {}})
    assert not events.accept("salt/job/20261125120000000004/new", {"fun": ["test.ping", "saltutil.running"]})
    assert not events.accept("salt/presence/present", {"present": ["m1"]})
    assert not events.accept("minion_ping", {"id": "m1"})
    assert not events.accept("salt/key", "not a dict")
    assert events.dropped == {"excluded_tag": 4, "excluded_function": 2, "malformed": 1}


def test_defaults_keep_every_other_tag():
    """Custom tags are what a site fires itself: storing them needs no configuration."""
    events, _ = make_filter()
    kept = [
        "mycompany/deploy/done",
        "salt/minion/m1/start",
        "salt/job/20261125120000000007/prog/m1/0",
        "salt/run/20261125120000000008/new",
        "salt/cloud/vm1/created",
        "salt/beacon/m1/inotify//etc/hosts",
        "salt/key",
        "salt/wheel/20261125120000000009/ret",
        "orchestrate/stage/1",
    ]
    for tag in kept:
        assert events.accept(tag, {"x": tag}), tag
    assert events.accepted == len(kept) and not events.dropped


def test_include_tags_turn_the_default_into_a_whitelist():
    events, _ = make_filter(include_tags=["salt/job/*"])
    assert events.accept("salt/job/20261125120000000010/new", {"fun": "test.ping"})
    assert not events.accept("mycompany/deploy/done", {"x": 1})
    assert events.dropped == {"not_included": 1}


def test_repeated_return_within_window_is_dropped_once_window_passes_it_is_kept():
    events, clock = make_filter(dedup_window=5)
    tag = "salt/job/20261125120000000005/ret/m1"
    assert events.accept(tag, {"fun": "test.ping", "_stamp": "a"})
    clock.now = 1
    assert not events.accept(tag, {"fun": "test.ping", "_stamp": "b"})  # minion retry
    clock.now = 7
    assert events.accept(tag, {"fun": "test.ping", "_stamp": "c"})
    assert events.dropped["duplicate"] == 1


def test_identical_events_ignore_stamp_but_different_data_is_kept():
    events, _ = make_filter(include_tags=["custom/*"])
    assert events.accept("custom/a", {"v": 1, "_stamp": "x"})
    assert not events.accept("custom/a", {"v": 1, "_stamp": "y"})
    assert events.accept("custom/a", {"v": 2, "_stamp": "z"})


def test_custom_globs_and_functions():
    events, _ = make_filter(include_tags=["*"], exclude_tags=["noisy/*"], exclude_functions=["grains.*"])
    assert events.accept("anything/at/all", {"a": 1})
    assert not events.accept("noisy/x", {"a": 1})
    assert not events.accept("salt/job/20261125120000000006/ret/m1", {"fun": "grains.items"})


def test_reserved_job_cache_tags_are_refused_from_the_bus():
    events = EventFilter(config.load({}))
    assert not events.accept("salt-relay/job-cache/return", {"id": "m2", "jid": "1", "return": "forged"})
    assert events.dropped == {"reserved_tag": 1}
