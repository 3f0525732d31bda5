"""``mmu-notifier run`` drives radeon; release's flags 0 shows as known kernel behaviour, apart from violations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKLOAD = """
name = "radeon-exit"
seed = 3
drivers = ["radeon"]

[[processes]]
name = "client"
count = 2
steps = [
  { op = "mmap", pages = 3 },
  { op = "touch", write = true },
  { op = "attach" },
  { op = "map" },
  { op = "access", write = true },
  { op = "madvise" },
  { op = "access" },
  { op = "exit" },
  { op = "detach" },
]
"""


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    workload = tmp_path / "radeon.toml"
    workload.write_text(WORKLOAD)
    run = subprocess.run([str(Path(sys.executable).with_name("mmu-notifier")), "run", str(workload), "--json", *extra],
                         capture_output=True, text=True, timeout=600, check=False)
    return run.returncode, json.loads(run.stdout)


def test_run_reports_release_flags_0_as_known_kernel_behaviour(tmp_path: Path) -> None:
    code, doc = _run(tmp_path)
    radeon = doc["drivers"]["radeon"]  # type: ignore[index]
    assert code == 0 and doc["ok"] and not doc["violations"] and not radeon["violations"]
    known = radeon["known_kernel_behaviour"]
    assert len(known) == 2 and all("[exit-coherence]" in k and "flags 0" in k for k in known)
    assert radeon["allocated"] == radeon["freed"] == 2 and radeon["invalidations"]


def test_run_with_the_5_3_scheme_reports_a_violation(tmp_path: Path) -> None:
    config = tmp_path / "radeon-5.3.toml"
    config.write_text('[drivers.radeon]\nscheme = "5.3"\n')
    code, doc = _run(tmp_path, "--config", str(config))
    radeon = doc["drivers"]["radeon"]  # type: ignore[index]
    assert code == 1 and not doc["ok"]
    assert any("[exit-coherence]" in v for v in radeon["violations"]) and not radeon["known_kernel_behaviour"]
