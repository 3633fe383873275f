"""How a sweep is cut into jitted chunks: about DEFAULT_CHUNKS host calls, and as
little computed-then-masked work past the last update as that allows."""

from klipjax.engine.sweep import DEFAULT_CHUNKS, choose_chunk


def _masked(num_updates: int, size: int) -> int:
    return -num_updates % size


def test_chunks_stay_near_the_target_and_waste_least():
    for num_updates in range(1, 5000):
        size = choose_chunk(num_updates)
        target = max(1, round(num_updates / DEFAULT_CHUNKS))
        assert target / 2 <= size <= min(2 * target, num_updates), num_updates
        # no size in the allowed range masks fewer updates
        best = min(
            _masked(num_updates, s)
            for s in range(max(1, -(-target // 2)), min(2 * target, num_updates) + 1)
        )
        assert _masked(num_updates, size) == best, num_updates
        assert _masked(num_updates, size) <= _masked(num_updates, target)


def test_known_sizes():
    assert choose_chunk(195) == 13  # the CartPole grid: a divisor, nothing masked
    # 488 updates (1M steps of 2048) has no divisor near 24: 14 masks 2, not 16
    assert choose_chunk(488) == 14 and _masked(488, 14) == 2
    assert _masked(4882, choose_chunk(4882)) == 1  # 10M steps of 2048
    assert choose_chunk(488, requested=7) == 7
    assert choose_chunk(10, requested=50) == 10
    assert choose_chunk(488, align=50) == 10  # divides the checkpoint interval
