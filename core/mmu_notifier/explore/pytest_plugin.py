"""pytest integration: the ``explorer`` fixture, the ``explore`` marker and seed shards.

A test describes its threads with a build function (called afresh for every
schedule) and lets the fixture explore them::

    @pytest.mark.explore(strategy="pct", budget=300)
    def test_counter(explorer):
        def build():
            run = ScenarioInstance()
            ...
            return run
        explorer.check(build)   # fails the test with the report if anything is found

Long explorations shard by seed: ``@explore_shards(8)`` parametrizes the test
over eight shards, each exploring with seed ``marker seed + shard``, and
pytest-xdist (``-n auto``) spreads the shards over its workers. The seed is in
the test id, so a failing shard reruns alone and identically.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from mmu_notifier.explore._explorer import Exploration, Replayed, explore, replay
from mmu_notifier.explore._scenario import Scenario, ScenarioInstance

SHARD_PARAM = "explore_shard"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker."""
    config.addinivalue_line(
        "markers",
        "explore(strategy='random', budget=1000, seed=0, depth=2, preemptions=2, time_budget=None): "
        "settings of the explorer fixture",
    )


def explore_shards(count: int) -> pytest.MarkDecorator:
    """Parametrize a test over ``count`` seed shards (read by the ``explorer`` fixture)."""
    return pytest.mark.parametrize(
        SHARD_PARAM, range(count), indirect=True, ids=[f"shard{i}" for i in range(count)]
    )


class Explorer:
    """Explores a test's threads with the settings of its ``explore`` marker."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings

    def scenario(self, build: Callable[[], ScenarioInstance] | Scenario) -> Scenario:
        """The test's scenario, named after the test."""
        return build if isinstance(build, Scenario) else Scenario(self.name, build)

    def run(self, build: Callable[[], ScenarioInstance] | Scenario, **overrides: Any) -> Exploration:
        """Explore and return the result (no assertion)."""
        return explore(self.scenario(build), **{**self.settings, **overrides})

    def check(self, build: Callable[[], ScenarioInstance] | Scenario, **overrides: Any) -> Exploration:
        """Explore and fail the test with the full report if anything was found."""
        result = self.run(build, **overrides)
        if result.failed:
            first = result.findings[0]
            pytest.fail(
                f"{result.text()}\n\nreplay in the test with: explorer.replay(build, {first.schedule!r})",
                pytrace=False,
            )
        return result

    def replay(self, build: Callable[[], ScenarioInstance] | Scenario, schedule: str) -> Replayed:
        """Replay one schedule of this test's scenario."""
        return replay(self.scenario(build), schedule)


@pytest.fixture
def explore_shard(request: pytest.FixtureRequest) -> int:
    """The seed shard of this test (0 unless parametrized by :func:`explore_shards`)."""
    return int(getattr(request, "param", 0))


@pytest.fixture
def explorer(request: pytest.FixtureRequest, explore_shard: int) -> Explorer:
    """An :class:`Explorer` configured by the test's ``explore`` marker and seed shard."""
    marker = request.node.get_closest_marker("explore")
    settings: dict[str, Any] = dict(marker.kwargs) if marker else {}
    settings["seed"] = settings.get("seed", 0) + explore_shard
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", request.node.name).strip("-")
    return Explorer(name, settings)
