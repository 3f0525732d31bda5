"""Long explorations, sharded by seed (``-m slow``; spread with ``-n auto``)."""

from __future__ import annotations

import pytest

from mmu_notifier.explore.pytest_plugin import Explorer, explore_shards
from mmu_notifier.scenarios import explore, scenarios

GET_PUT = scenarios()["get-put"]


@pytest.mark.slow
@explore_shards(8)
@pytest.mark.explore(strategy="random", budget=20_000)
def test_get_put_stays_clean_under_random_walks(explorer: Explorer) -> None:
    explorer.check(GET_PUT)


@pytest.mark.slow
@explore_shards(4)
@pytest.mark.explore(strategy="pct", budget=5_000, depth=3)
def test_get_put_stays_clean_under_pct_depth_3(explorer: Explorer) -> None:
    explorer.check(GET_PUT)


@pytest.mark.slow
def test_get_put_is_clean_with_three_preemptions() -> None:
    result = explore(GET_PUT, "dfs", budget=200_000, preemptions=3)
    assert result.complete and not result.findings


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_race_found_by_random_and_pct_for_many_seeds(seed: int) -> None:
    assert explore("unregister-no-release", "random", budget=1000, seed=seed, reproduce=0).bugs
    assert explore("unregister-no-release", "pct", budget=200, seed=seed, reproduce=0).bugs
