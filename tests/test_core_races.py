"""The mm model's own races, searched exhaustively with the explorer."""

from __future__ import annotations

import pytest

import mmu_notifier as mn
from mmu_notifier.explore import Scenario, ScenarioInstance, explore


def _cow_against(racer: str) -> Scenario:
    """A write fault breaking COW while another thread reclaims, migrates or merges that page."""

    def build() -> ScenarioInstance:
        kernel = mn.Kernel(frames=64)
        mm = mn.MM(kernel)
        addr = mm.mmap(4096)
        mm.fault(addr, write=True)
        child = mm.fork()
        other = mn.MM(kernel)
        other_addr = other.mmap(4096)
        other.fault(other_addr, write=True)
        instance = ScenarioInstance()
        instance.thread("writer")(lambda: mm.fault(addr, write=True))

        @instance.thread("racer")
        def race() -> None:
            try:
                if racer == "reclaim":
                    mm.reclaim(addr)
                elif racer == "migrate":
                    mm.migrate(addr)
                else:
                    mm.ksm_merge(addr, other, other_addr)
            except mn.BadAddressError:
                pass  # the page went away under KSM: a legal outcome

        @instance.check
        def frames_accounted() -> None:
            for each in (mm, child, other):
                each.exit()
            assert kernel.memory.in_use() == 0

        return instance

    return Scenario(f"cow-vs-{racer}", build)


@pytest.mark.parametrize("racer", ["reclaim", "migrate", "ksm"])
def test_cow_fault_racing_page_table_changes_is_clean(racer):
    result = explore(_cow_against(racer), "dfs", budget=5000, preemptions=2)
    assert result.findings == [], result.text()
    assert result.stats.schedules > 1
