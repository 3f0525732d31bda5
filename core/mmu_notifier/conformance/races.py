"""The kit's concurrency checks: small races of a driver's user paths, explored with PCT.

Each :class:`Race` builds, for every schedule, a fresh world of the harness
(:class:`~mmu_notifier.conformance.harness.World`) in which two model threads
race the way real tasks do (the last detach against munmap, exit against
detach, a remote attach against exit, the OOM reaper or a migration against
device accesses); after the run the invariants of
:mod:`mmu_notifier.invariants` must hold. :data:`RACES` lists them,
:func:`explore_race` explores one with the explorer's PCT strategy and
:func:`replay_race` re-runs a reported schedule.

The explorer is imported inside the functions: loading the kit for its
sequential checks does not load the explorer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmu_notifier import exerciser as contract
from mmu_notifier import invariants, synchronize
from mmu_notifier.conformance.harness import DriverUnderTest, World
from mmu_notifier.exerciser import Handle
from mmu_notifier.mm import MM

__all__ = ["RACES", "Race", "explore_race", "race_scenario", "replay_race"]


@dataclass(frozen=True)
class Race:
    """One concurrency check: a scenario builder, what it shows, what it needs."""

    key: str
    description: str
    build: Callable[[DriverUnderTest], Any]
    needs: frozenset[str] = field(default_factory=frozenset)


def _violation_check(world: World, context: str) -> Callable[[], None]:
    def check() -> None:
        from mmu_notifier.explore import Violation as ExploreViolation

        found = world.violations(settled=True)
        if found:
            raise ExploreViolation(f"{context}: {invariants.format_violations(found)}")

    return check


def _finale(world: World, exit_mm: MM | None = None) -> Callable[[], None]:
    """Module-exit-like end of a race: detach what is left, exit if asked, wait for every free."""

    def finale() -> None:
        if exit_mm is not None and exit_mm.alive:
            exit_mm.exit()
        for handle in list(world.held()):
            world.detach(handle)
        synchronize(world.kernel)

    return finale


def _prepared(dut: DriverUnderTest, pages: int = 3) -> tuple[World, MM, Handle, int, int]:
    world = dut.world(frames=256)
    mm = world.new_mm()
    handle = world.attach(mm)
    start, end = world.region(mm, pages, handle=handle)
    for addr in range(start, end, world.page):
        mm.fault(addr, write=True)
        world.access(handle, addr, verify=False)
    return world, mm, handle, start, end


def _detach_vs_invalidation(dut: DriverUnderTest) -> Any:
    from mmu_notifier.explore import ScenarioInstance

    world, mm, handle, start, end = _prepared(dut)
    by_exit = dut.has(contract.DETACH_BY_EXIT)
    run = ScenarioInstance()
    run.thread("detach")(lambda: world.detach(handle))

    @run.thread("invalidate")
    def invalidate() -> None:
        mm.madvise_dontneed(start, world.page)
        mm.munmap(start + world.page, end - start - world.page)

    run.finale = _finale(world, mm if by_exit else None)
    run.check(_violation_check(world, "after the last detach raced an invalidation"))
    return run


def _exit_vs_detach(dut: DriverUnderTest) -> Any:
    from mmu_notifier.explore import ScenarioInstance

    world, mm, handle, _, _ = _prepared(dut)
    run = ScenarioInstance()
    run.thread("exit")(mm.exit)
    run.thread("detach")(lambda: world.detach(handle))
    run.finale = _finale(world)
    run.check(_violation_check(world, "after exit raced the last detach"))
    return run


def _attach_vs_exit(dut: DriverUnderTest) -> Any:
    from mmu_notifier.explore import ScenarioInstance

    world = dut.world(frames=256)
    mm = world.new_mm()
    start, end = world.region(mm, 2)
    for addr in range(start, end, world.page):
        mm.fault(addr, write=True)
    run = ScenarioInstance()

    @run.thread("attach")
    def attach() -> None:
        if not mm.mmget_not_zero():  # a remote attach pins the mm first (get_task_mm)
            return
        try:
            handle = world.attach(mm)
            world.exerciser.map_range(handle, start, end)
            world.access(handle, start, verify=False)
        finally:
            mm.mmput()
        world.access(handle, start + world.page, verify=False)
        world.detach(handle)

    run.thread("exit")(mm.exit)
    run.finale = _finale(world)
    run.check(_violation_check(world, "after an attach raced exit"))
    return run


def _access_race(dut: DriverUnderTest, cpu: str) -> Any:
    """Device accesses to every page of a translated range race a CPU change of it; then coherence."""
    from mmu_notifier.explore import ScenarioInstance
    from mmu_notifier.explore import Violation as ExploreViolation

    world, mm, handle, start, end = _prepared(dut)
    run = ScenarioInstance()

    @run.thread("device")
    def device() -> None:
        for addr in range(start, end, world.page):
            world.access(handle, addr, tries=2, verify=False)

    if cpu == "oom-reaper":
        run.thread("oom-reaper")(mm.oom_reap)
    else:

        @run.thread("cpu")
        def change() -> None:
            mm.madvise_dontneed(start, 2 * world.page)
            mm.migrate(end - world.page)

    context = f"after {'a non-blockable' if cpu == 'oom-reaper' else 'an'} invalidation raced device accesses"

    def finale() -> None:
        found = world.violations()
        if found:  # coherence while still attached, before the detach drops everything
            raise ExploreViolation(f"{context}: {invariants.format_violations(found)}")
        _finale(world, mm if dut.has(contract.DETACH_BY_EXIT) else None)()

    run.finale = finale
    run.check(_violation_check(world, context))
    return run


RACES: dict[str, Race] = {
    race.key: race
    for race in (
        Race("detach-vs-invalidation", "the last detach (put) races munmap/madvise of a mapped range",
             _detach_vs_invalidation),
        Race("exit-vs-detach", "the mm exits (release) while the last attach detaches", _exit_vs_detach),
        Race("attach-vs-exit", "a pinned remote attach, map and device access race the owner's exit",
             _attach_vs_exit),
        Race("nonblock-vs-access", "the OOM reaper's non-blockable invalidation races device accesses",
             lambda dut: _access_race(dut, "oom-reaper"), frozenset({contract.DEVICE_TRANSLATIONS})),
        Race("invalidation-vs-access", "madvise and migration of a translated range race device accesses",
             lambda dut: _access_race(dut, "cpu"), frozenset({contract.DEVICE_TRANSLATIONS})),
    )
}


def race_scenario(dut: DriverUnderTest, key: str) -> Any:
    """The explorer :class:`~mmu_notifier.explore.Scenario` of race ``key`` for this driver."""
    from mmu_notifier.explore import Scenario

    race = RACES[key]
    return Scenario(f"conformance.{dut.name}.{key}", lambda: race.build(dut), race.description)


def explore_race(dut: DriverUnderTest, key: str, budget: int, seed: int = 0, depth: int = 2) -> Any:
    """Explore race ``key`` with PCT for ``budget`` schedules; returns the :class:`Exploration`."""
    from mmu_notifier.explore import explore

    return explore(race_scenario(dut, key), strategy="pct", budget=budget, seed=seed, depth=depth,
                   minimise_budget=300, reproduce=2)


def replay_race(driver: str, key: str, schedule: str) -> Any:
    """Replay a schedule the kit reported: ``replay_race("gntdev", "exit-vs-detach", "<schedule>")``."""
    from mmu_notifier.explore import replay as explore_replay

    return explore_replay(race_scenario(DriverUnderTest.load(driver), key), schedule)
