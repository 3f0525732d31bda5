"""The plugin as installed: the conformance kit, the main job, the config model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from mmu_notifier_rdma_odp import RdmaOdpConfig
from mmu_notifier_rdma_odp.exerciser import KNOWN_5_3_FAILURES


def test_conformance_kit_passes_for_5_4() -> None:
    run = subprocess.run([sys.executable, "-m", "mmu_notifier.conformance", "rdma_odp", "-q"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:]


@pytest.mark.slow
def test_conformance_kit_for_5_3_fails_only_what_5_3_cannot_pass(tmp_path: Path) -> None:
    """The exerciser names the four checks 5.3 fails by design; the kit expects exactly those to fail."""
    config = tmp_path / "odp53.toml"
    config.write_text('[drivers.rdma_odp]\nscheme = "5.3"\n')
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rx", "-p", "no:cacheprovider",
                          "--pyargs", "mmu_notifier.conformance", "--mmu-driver", "rdma_odp",
                          "--mmu-config", str(config)], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:]
    xfailed = {line.split("::")[1].split("[")[0] for line in run.stdout.splitlines() if line.startswith("XFAIL")}
    assert xfailed == set(KNOWN_5_3_FAILURES), run.stdout[-4000:]


def _run(*args: str) -> dict:  # type: ignore[type-arg]
    run = subprocess.run([sys.executable, "-m", "mmu_notifier.cli", "run", "--json", *args], capture_output=True,
                         text=True, timeout=900)
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_main_job_drives_the_plugin_with_zero_violations() -> None:
    """The built-in workload over every installed driver: nothing against rdma_odp."""
    summary = _run()
    odp = summary["drivers"]["rdma_odp"]
    assert odp["violations"] == []
    assert not [v for v in summary["violations"] if "rdma_odp" in v or "IbUcontextPerMm" in v or "umem" in v]
    assert odp["allocated"] == odp["freed"] > 0 and odp["device_faults"] > 0
    assert odp["peak_users"] >= 2, "attaches of one mm share the per_mm"


WORKLOADS = sorted((Path(__file__).parents[3] / "examples" / "workloads").glob("*.*"))


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.name if isinstance(p, Path) else str(p))
def test_example_workloads_with_only_rdma_odp(workload: Path, tmp_path: Path) -> None:
    """Each example workload with ``drivers = ["rdma_odp"]``: the run is clean."""
    text = workload.read_text()
    if workload.suffix == ".toml":
        only = tmp_path / workload.name
        only.write_text('drivers = ["rdma_odp"]\n' + text)
    else:
        only = tmp_path / workload.name
        only.write_text("drivers: [rdma_odp]\n" + text)
    summary = _run(str(only))
    assert summary["violations"] == [] and summary["ok"], summary["violations"][:3]
    assert list(summary["drivers"]) == ["rdma_odp"]


def test_config_defaults_and_validation() -> None:
    config = RdmaOdpConfig()
    assert (config.scheme, config.implicit_chunk_size, config.fault_timeout_ms) == ("5.4", 1 << 30, 1000)
    assert not any(getattr(config, f) for f in RdmaOdpConfig.model_fields if f.startswith("bug_"))
    assert all(field.description for field in RdmaOdpConfig.model_fields.values())
    with pytest.raises(pydantic.ValidationError):
        RdmaOdpConfig(scheme="5.5")
    with pytest.raises(pydantic.ValidationError):
        RdmaOdpConfig(implicit_chunk_size=1000)
