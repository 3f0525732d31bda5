"""The main job (`mmu-notifier run`) with a small, correct mirroring driver."""

from __future__ import annotations

import importlib.metadata
import json
import random
import sys
import threading
import types
from pathlib import Path

import pytest
from mirror_driver import MirrorDriver

from mmu_notifier import MM, plugins
from mmu_notifier.cli import main
from mmu_notifier.workload import model, runner, steps, summary
from mmu_notifier.workload.default import DEFAULT
from mmu_notifier.workload.world import new_world


@pytest.fixture
def mirror_installed(monkeypatch):
    module = types.ModuleType("fake_mirror")
    module.MirrorDriver = MirrorDriver
    monkeypatch.setitem(sys.modules, "fake_mirror", module)
    entry = importlib.metadata.EntryPoint(name="mirror", value="fake_mirror:MirrorDriver",
                                          group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "available_drivers", lambda: [entry])


def test_default_workload_runs_clean_and_reports_every_driver(mirror_installed, capsys):
    assert main(["run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["violations"] == []
    stats = doc["drivers"]["mirror"]
    assert stats["allocated"] == stats["freed"] > 0
    assert stats["device_faults"] > 0 and stats["peak_users"] >= 1
    assert set(stats["invalidations"]) >= {"UNMAP", "CLEAR", "PROTECTION_VMA", "PROTECTION_PAGE", "SOFT_DIRTY"}
    assert doc["events_per_second"] > 0


def test_same_seed_same_summary(mirror_installed):
    first = summary.document(runner.run_deterministic(DEFAULT, seed=7))
    second = summary.document(runner.run_deterministic(DEFAULT, seed=7))
    for doc in (first, second):
        doc.pop("wall_seconds")
        doc.pop("events_per_second")
    assert first == second


def test_text_summary_is_readable(mirror_installed, capsys):
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "mirror" in out and "no violations" in out and "events/s" in out


def test_threads_mode_runs_clean(mirror_installed):
    result = runner.run_threads(DEFAULT, threads=3)
    assert result.ok, result.violations
    assert result.mode == "threads(3)"


def test_threads_mode_runs_the_background_work_beside_the_processes(mirror_installed, monkeypatch):
    # kswapd is a thread of its own from the start (it used to wait in a lane behind that lane's processes)
    events: list[tuple[str, str]] = []
    real_build, real_background = runner.build, runner.background

    def build(world_box, workload):
        instance = real_build(world_box, workload)

        def ended(name, body):
            def run():
                body()
                events.append(("end", name))
            return run

        instance.threads = [(name, body if name == runner.BACKGROUND else ended(name, body))
                            for name, body in instance.threads]
        return instance

    def background(world, rng):
        events.append(("kswapd", threading.current_thread().name))
        real_background(world, rng)

    monkeypatch.setattr(runner, "build", build)
    monkeypatch.setattr(runner, "background", background)
    workload = DEFAULT.model_copy(update={"processes": [DEFAULT.processes[0].model_copy(update={"count": 40})]})
    result = runner.run_threads(workload, threads=1)
    assert result.ok, result.violations
    ends = [name for kind, name in events if kind == "end"]
    assert len(ends) == 40
    start = events.index(next(e for e in events if e[0] == "kswapd"))
    assert start < 40  # some process was still running when kswapd began
    assert events[start][1] not in {"MainThread"}


def test_threads_mode_keeps_the_traceback_of_an_exception_that_ended_a_process(mirror_installed, monkeypatch):
    # not a driver's fault (those are the driver's violations, with their tracebacks): the model's own code
    # raised in a process body on an OS thread; the run goes on without that process
    def broken_soft_dirty(self: steps.ProcessRunner, step: model.ProcessStep) -> bool:
        if self.name == "worker1":
            raise RuntimeError("soft-dirty broke")
        return original(self, step)

    original = steps.ProcessRunner._op_soft_dirty
    monkeypatch.setattr(steps.ProcessRunner, "_op_soft_dirty", broken_soft_dirty)
    result = runner.run_threads(DEFAULT, threads=3)
    assert not result.ok
    assert "exception in worker1: RuntimeError: soft-dirty broke" in result.violations
    assert list(result.tracebacks) == ["worker1"]
    text = result.tracebacks["worker1"]
    assert text.startswith("Traceback (most recent call last):")
    assert "in broken_soft_dirty" in text and text.rstrip().endswith("RuntimeError: soft-dirty broke")
    doc = summary.document(result)
    assert doc["tracebacks"] == {"worker1": text}
    page = summary.render(doc)
    assert "traceback of the exception that ended worker1:" in page
    shown = page.split("traceback of the exception that ended worker1:\n", 1)[1].splitlines()
    assert shown == [f"    {line}" for line in text.rstrip().splitlines()]
    assert json.loads(json.dumps(doc))["tracebacks"] == {"worker1": text}


def test_a_threads_mode_run_stopped_by_the_watchdog_still_reports_an_exception_that_ended_a_process(
    mirror_installed, monkeypatch
):
    from mirror_driver import MirrorExerciser

    release = threading.Event()
    hung: list[str] = []

    def broken_touch(self: steps.ProcessRunner, step: model.ProcessStep) -> bool:
        if self.name == "worker1":
            raise RuntimeError("touch broke")
        return original_touch(self, step)

    def stuck_access(self, handle, address, write=False):
        if not hung:  # the first access never returns (until the test ends)
            hung.append(threading.current_thread().name)
            release.wait(30)
        return original_access(self, handle, address, write)

    original_touch, original_access = steps.ProcessRunner._op_touch, MirrorExerciser.access
    monkeypatch.setattr(steps.ProcessRunner, "_op_touch", broken_touch)
    monkeypatch.setattr(MirrorExerciser, "access", stuck_access)
    try:
        result = runner.run(DEFAULT, seed=0, threads=3, watchdog=0.3)
    finally:
        release.set()  # the stuck call returns, and the abandoned run goes on to its end
        for thread in threading.enumerate():
            if thread.name == "mmu-notifier-run":
                thread.join(30)
    assert result.stopped == "hang" and hung
    assert "exception in worker1: RuntimeError: touch broke" in result.violations
    assert list(result.tracebacks) == ["worker1"] and "in broken_touch" in result.tracebacks["worker1"]
    assert "traceback of the exception that ended worker1:" in summary.render(summary.document(result))


def test_the_background_thread_picks_a_live_mm_while_another_process_exits(mirror_installed, monkeypatch):
    # On OS threads a process may exit (or start) at any GIL switch, also while the background thread looks for
    # a live mm; here the first ``alive`` it asks lets another process exit, as a switch there would.
    workload = DEFAULT.model_copy(update={"background": model.Background(reclaim=1, migrate=0, age=0)})
    world = new_world(workload)
    mms = []
    for _ in range(3):
        mm = MM(world.kernel)
        start = mm.mmap(mm.page_size)
        mm.fault(start, write=True)
        world.live[id(mm)] = mm
        mms.append(mm)
    leaver = mms[1]
    alive = MM.alive

    def switched(self: MM) -> bool:
        if id(leaver) in world.live:
            del world.live[id(leaver)]
            leaver.exit()
        return alive.fget(self)

    monkeypatch.setattr(MM, "alive", property(switched))
    steps.background(world, random.Random(0))
    assert world.steps == 1  # the reclaim found a live mm and ran; no "dictionary changed size during iteration"
    monkeypatch.undo()
    assert sum(len(mm.page_table) for mm in mms) == 1 and len(world.kernel.memory.refcount) == 1
    for mm in (mms[0], mms[2]):
        mm.exit()
    assert world.kernel.memory.in_use() == 0


def test_malformed_workload_is_one_line_naming_the_field(mirror_installed, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[[processes]]\nname = "p"\nsteps = [{op = "mmapp"}]\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "processes.0.steps.0.op" in err


def test_yaml_workload_runs(mirror_installed, tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: tiny\nprocesses:\n  - name: p\n    steps:\n      - {op: mmap, pages: 2}\n"
        "      - {op: attach}\n      - {op: access, write: true}\n      - {op: munmap}\n"
    )
    assert main(["run", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workload"] == "tiny"


def test_unknown_driver_in_workload_is_refused_before_running(mirror_installed, tmp_path, capsys):
    path = tmp_path / "w.toml"
    path.write_text('drivers = ["nosuch"]\n[[processes]]\nname = "p"\nsteps = [{op = "mmap"}]\n')
    assert main(["run", str(path)]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_timeline_svg_is_rendered(mirror_installed, tmp_path, capsys):
    picture = tmp_path / "run.svg"
    assert main(["run", "--timeline", str(picture), "--json"]) == 0
    text = picture.read_text()
    assert text.startswith("<svg") and "kswapd" in text and "worker0" in text
    assert "srcu_read_lock" in text and 'fill="#2e9d5b"' in text


def test_workload_model_rejects_unknown_keys():
    with pytest.raises(model.WorkloadError, match=r"processes\.0\.stepz: Extra inputs"):
        model.parse({"processes": [{"name": "p", "steps": [{"op": "mmap"}], "stepz": []}]})


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "workloads").glob("*.*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_workloads_run_clean(mirror_installed, path):
    workload = model.load(path)
    if workload.drivers:  # a workload for named plugins (interval-5.5): its process shapes, on the core's mirror
        workload = workload.model_copy(update={"drivers": None, "driver_configs": {}})
    result = runner.run_deterministic(workload, seed=0)
    assert result.ok, result.violations
    assert result.steps > 0
