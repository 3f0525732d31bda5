"""Concurrency: five races explored with PCT for a fixed budget per driver; zero reports allowed.

Each race is a small scenario (see :data:`mmu_notifier.conformance.races.RACES`)
rebuilt for every schedule on the explorer's deterministic backend, with the
monitor's invariants as its end-of-run checks and the explorer's own
detectors (use after free, double free, deadlock, sleep in atomic context,
lock-order inversion, exceptions) on throughout. The default budget (200
schedules per race, ``--mmu-budget``) finds the patch-09 amdkfd race of the
explorer's ``unregister-no-release`` scenario many times over: 11 to 16 of
those 200 PCT schedules hit it (seeds 0 to 2), the first within 50.

The four races of the kit's brief (detach vs invalidation, exit vs detach,
attach vs exit, non-blockable invalidation vs device access) come with a
fifth, the classic mirror race: a blockable invalidation vs a device access,
which a driver without a sequence count (or an in-flight count checked under
its lock) loses.
"""

from __future__ import annotations

import pytest

from mmu_notifier.conformance.harness import DriverUnderTest
from mmu_notifier.conformance.plugin import KitOptions, require
from mmu_notifier.conformance.races import RACES, explore_race


def _explore(dut: DriverUnderTest, key: str, options: KitOptions) -> None:
    race = RACES[key]
    for capability in sorted(race.needs):
        require(dut, capability, f"the race '{key}' needs it ({race.description})")
    result = explore_race(dut, key, options.budget, options.seed)
    if result.findings:
        report = "\n\n".join(finding.text() for finding in result.findings)
        schedule = result.findings[0].minimised or result.findings[0].schedule
        pytest.fail(
            f"race {key} ({race.description}): {len(result.findings)} finding(s) in {result.stats.schedules} "
            f"PCT schedules\n{report}\n\nreplay it with:\n  python -c \"from mmu_notifier.conformance.races import "
            f"replay_race; print(replay_race({dut.name!r}, {key!r}, {schedule!r}).text())\"",
            pytrace=False,
        )


def test_race_detach_vs_invalidation(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """The last detach (put: unlink, deferred free) races munmap and madvise of a translated range."""
    _explore(mmu_driver, "detach-vs-invalidation", mmu_options)


def test_race_exit_vs_detach(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """The mm exits (release, unlink) while the last attach detaches (put)."""
    _explore(mmu_driver, "exit-vs-detach", mmu_options)


def test_race_attach_vs_exit(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """A pinned remote attach, map and device access race the owner's exit."""
    _explore(mmu_driver, "attach-vs-exit", mmu_options)


def test_race_nonblock_vs_access(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """The OOM reaper's non-blockable invalidation races device accesses."""
    _explore(mmu_driver, "nonblock-vs-access", mmu_options)


def test_race_invalidation_vs_access(mmu_driver: DriverUnderTest, mmu_options: KitOptions) -> None:
    """madvise and migration of a translated range race device accesses (the mirror's retry race)."""
    _explore(mmu_driver, "invalidation-vs-access", mmu_options)
