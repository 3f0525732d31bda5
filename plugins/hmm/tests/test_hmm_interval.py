"""``scheme = "5.5"``: nouveau's SVM on interval notifiers (``mmu_notifier_hmm.interval``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mmu_notifier as mn
from mmu_notifier.exerciser import INTERVAL
from mmu_notifier.explore import explore as explore_scenario
from mmu_notifier.scenarios import scenarios
from mmu_notifier_hmm import HmmConfig, HmmDriver, HmmIntervalNotifier
from mmu_notifier_hmm import interval as hmm_interval
from mmu_notifier_hmm.device import DeviceMirror
from mmu_notifier_hmm.interval import Svmm55
from mmu_notifier_hmm.range import range_register

ROOT = Path(__file__).resolve().parents[3]


def _world(pages: int = 2) -> tuple[mn.Kernel, HmmDriver, mn.MM, int, DeviceMirror]:
    kernel = mn.Kernel(frames=32)
    driver = HmmDriver(HmmConfig(scheme="5.5"))
    kernel.drivers.add(driver)
    mm = mn.MM(kernel)
    base = mm.mmap(pages * mm.page_size)
    for i in range(pages):
        mm.fault(base + i * mm.page_size, write=True)
    device = DeviceMirror(mm, driver.config)
    device.bind()
    return kernel, driver, mm, base, device


def _itree(mm: mn.MM) -> list[mn.MMUIntervalNotifier]:
    container = mm.mmu_notifier_mm
    assert container is not None and container.interval is not None
    return list(container.interval.itree)


def test_config_reads_5_5_from_text_and_number() -> None:
    assert HmmConfig(scheme="5.5").scheme == "5.5"
    assert HmmConfig.model_validate({"scheme": 5.5}).scheme == "5.5"


def test_5_5_ops_have_invalidate_and_no_end_and_declare_interval() -> None:
    new, old = HmmDriver(HmmConfig(scheme="5.5")), HmmDriver(HmmConfig(scheme="5.4"))
    assert new.null_callbacks() == frozenset({"invalidate_range_end"})
    assert old.null_callbacks() == frozenset({"invalidate"})
    assert INTERVAL in new.capabilities and INTERVAL not in old.capabilities


def test_one_shared_list_notifier_per_mm() -> None:
    _, driver, mm, _, device = _world()
    other = DeviceMirror(mm, driver.config)
    other.bind()
    assert isinstance(device.hmm, Svmm55) and other.hmm is device.hmm
    assert device.hmm.users == 2
    other.unbind()
    device.unbind()


def test_fault_inserts_a_temporary_interval_notifier_and_removes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, mm, base, device = _world()
    inserted: list[int] = []
    real = hmm_interval.range_fault

    def spy(range: hmm_interval.HmmRange) -> int:
        inserted.append(len(_itree(mm)))
        assert isinstance(range.notifier, HmmIntervalNotifier) and range.notifier.device is device
        return real(range)

    monkeypatch.setattr(hmm_interval, "range_fault", spy)
    device.fault(base, base + 2 * mm.page_size)
    assert inserted == [1] and _itree(mm) == []
    first = base >> mm.page_shift
    assert sorted(device.translations()) == [first, first + 1]
    assert device.incoherent() == [] and device.retries == 0
    device.unbind()


def test_an_invalidation_between_walk_and_check_makes_the_fault_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 5.4 hole (a whole invalidation between hmm_range_fault and the check) is caught by read_retry."""
    _, _, mm, base, device = _world()
    real = hmm_interval.range_fault
    calls = 0

    def walk_then_reclaim(range: hmm_interval.HmmRange) -> int:
        nonlocal calls
        calls += 1
        done = real(range)
        if calls == 1:
            mm.reclaim(base)  # starts and ends before the fault takes svmm->mutex
        return done

    monkeypatch.setattr(hmm_interval, "range_fault", walk_then_reclaim)
    device.fault(base, base + 2 * mm.page_size)
    assert calls == 2 and device.retries == 1
    assert device.incoherent() == [] and len(device.translations()) == 2
    device.unbind()


def test_invalidate_sets_the_sequence_and_the_list_notifier_tears_down() -> None:
    _, _, mm, base, device = _world()
    device.fault(base, base + 2 * mm.page_size)
    sub = device.track(base, base + 2 * mm.page_size)
    seq = mn.interval_read_begin(sub)
    mm.reclaim(base)
    with device.update:
        assert mn.interval_read_retry(sub, seq)
    assert (base >> mm.page_shift) not in device.translations()
    assert device.incoherent() == []
    device.unbind()
    assert _itree(mm) == []


def test_oom_reaper_tears_down_without_sleeping_and_leaves_the_sequence_even() -> None:
    _, _, mm, base, device = _world()
    device.fault(base, base + 2 * mm.page_size)
    sub = device.track(base, base + 2 * mm.page_size)
    mm.oom_reap()
    assert device.translations() == {}
    container = mm.mmu_notifier_mm
    assert container is not None and container.interval is not None
    assert container.interval.active_invalidate_ranges == 0 and container.interval.invalidate_seq % 2 == 0
    seq = mn.interval_read_begin(sub)  # would sleep for ever had the list refused after the interval part
    with device.update:
        assert not mn.interval_read_retry(sub, seq)
    device.unbind()


def test_range_register_is_refused_in_5_5() -> None:
    _, _, mm, base, device = _world()
    with pytest.raises(mn.MisuseError, match=r"5\.5 removed the range API"):
        range_register(hmm_interval.HmmRange(base, base + mm.page_size), device)
    assert mm.mm_users.value == 1  # refused before the mm pin
    device.unbind()


def test_fault_after_exit_is_refused() -> None:
    _, _, mm, base, device = _world()
    mm.exit()
    with pytest.raises(mn.BadAddressError, match="has exited"):
        device.fault(base, base + mm.page_size)
    device.unbind()


@pytest.mark.parametrize("name", ["hmm-5.5-device-coherence", "hmm-5.5-device-range-valid", "hmm-5.5-invalidate",
                                  "hmm-5.5-exit"])
def test_5_5_flows_are_clean_under_bounded_dfs(name: str) -> None:
    scenario = scenarios(plugins=True)[name]
    assert scenario.expect is None
    result = explore_scenario(scenario, "dfs", budget=100_000, preemptions=2)
    assert result.complete and not result.findings and result.stats.schedules > 100


def test_the_5_4_range_valid_bug_is_found_where_5_5_is_clean() -> None:
    result = explore_scenario(scenarios(plugins=True)["hmm-device-range-valid"], "dfs", budget=100_000,
                              preemptions=2)
    assert result.findings and result.findings[0].problem.kind.value == "invariant"


def test_the_kit_passes_for_5_5(tmp_path: Path) -> None:
    config = tmp_path / "hmm55.toml"
    config.write_text('[drivers.hmm]\nscheme = "5.5"\n')
    cli = str(Path(sys.executable).with_name("mmu-notifier"))
    run = subprocess.run([cli, "conformance", "hmm", "--config", str(config)], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    # nothing skipped: the interval checks (skipped for a driver without the capability) ran and passed
    assert "failed" not in run.stdout and "skipped" not in run.stdout and " passed" in run.stdout


def test_interval_workload_runs_hmm_with_no_violation() -> None:
    workload = ROOT / "examples" / "workloads" / "interval-5.5.toml"
    run = subprocess.run([str(Path(sys.executable).with_name("mmu-notifier")), "run", str(workload), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    doc = json.loads(run.stdout)
    hmm = doc["drivers"]["hmm"]
    assert run.returncode == 0 and doc["ok"] and not doc["violations"] and not hmm["violations"]
