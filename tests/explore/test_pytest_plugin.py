"""The explorer fixture, its marker and seed shards."""

from __future__ import annotations

import pytest

from mmu_notifier import sync
from mmu_notifier.explore import ScenarioInstance
from mmu_notifier.explore.pytest_plugin import Explorer, explore_shards


def _counter() -> ScenarioInstance:
    lock = sync.Mutex("counter_lock")
    count = [0]
    run = ScenarioInstance()

    def inc() -> None:
        with lock:
            seen = count[0]
            sync.yield_now()
            count[0] = seen + 1

    run.thread("A")(inc)
    run.thread("B")(inc)

    @run.check
    def counted() -> None:
        assert count[0] == 2, count[0]

    return run


@pytest.mark.explore(strategy="dfs", budget=1000)
def test_marker_settings_reach_the_fixture(explorer: Explorer) -> None:
    assert explorer.settings == {"strategy": "dfs", "budget": 1000, "seed": 0}
    result = explorer.check(_counter)
    assert result.complete and result.stats.schedules > 1


def test_check_fails_the_test_with_the_report(explorer: Explorer) -> None:
    def racy() -> ScenarioInstance:
        count = [0]
        run = ScenarioInstance()

        def inc() -> None:
            seen = count[0]
            sync.yield_now()
            count[0] = seen + 1

        run.thread("A")(inc)
        run.thread("B")(inc)

        @run.check
        def counted() -> None:
            assert count[0] == 2, f"count {count[0]}"

        return run

    with pytest.raises(pytest.fail.Exception) as failure:
        explorer.check(racy, budget=200)
    text = str(failure.value)
    assert "BUG" in text and "explorer.replay(build, 'mx2:" in text
    schedule = text.split("explorer.replay(build, '")[1].split("'")[0]
    assert explorer.replay(racy, schedule).problem is not None


@explore_shards(3)
@pytest.mark.explore(strategy="random", budget=50, seed=100)
def test_shards_get_distinct_seeds(explorer: Explorer, explore_shard: int) -> None:
    assert explorer.settings["seed"] == 100 + explore_shard
    explorer.check(_counter)
