from salt_engine_lib.batching import Batcher


def test_batch_due_by_count_and_by_age():
    now = [0.0]
    batcher = Batcher(max_items=3, max_wait=0.2, clock=lambda: now[0])
    assert batcher.seconds_until_due() is None and not batcher.is_due()
    batcher.add(1)
    batcher.add(2)
    assert not batcher.is_due()
    assert batcher.seconds_until_due() == 0.2
    now[0] = 0.25
    assert batcher.is_due()
    assert batcher.take() == [1, 2]
    for item in range(3):
        batcher.add(item)
    assert batcher.is_due()
    assert batcher.take() == [0, 1, 2] and len(batcher) == 0
