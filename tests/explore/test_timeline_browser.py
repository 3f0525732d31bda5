"""The timeline pictures as a person sees them: rendered by headless Chromium, measured in the page.

Each page is the timeline's own HTML plus a script that measures, after
layout, every text element of the picture against the picture's box (nothing
cut off), the picture's rendered size against its declared size, and what it
shows (lanes, step marks, the allocation, the free and the problem). Chromium
prints the DOM after the script ran (``--dump-dom``); the test reads the
measurements back from it. ``scripts/test`` installs Chromium on CI; without
it these tests skip and the reason is printed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmu_notifier import scenarios
from mmu_notifier.explore import Timeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/test installs it with apt-get when CI=true)"
)

MEASURE = """
<script>
window.addEventListener("load", () => {
  const svg = document.querySelector("svg");
  const box = svg.getBoundingClientRect();
  const clipped = [];
  for (const t of svg.querySelectorAll("text")) {
    const r = t.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
      clipped.push(t.textContent);
  }
  const result = {
    width: box.width, height: box.height,
    declared: [Number(svg.getAttribute("width")), Number(svg.getAttribute("height"))],
    title: svg.querySelector("text.title").textContent,
    lanes: [...svg.querySelectorAll("text.lane")].map(t => t.textContent),
    steps: svg.querySelectorAll("rect.step").length,
    frees: [...svg.querySelectorAll("g.mark.free text")].map(t => t.textContent),
    allocs: svg.querySelectorAll("g.mark.alloc").length,
    problem: [...svg.querySelectorAll("g.problem text")].map(t => t.textContent),
    legend: [...svg.querySelectorAll("g.legend text")].map(t => t.textContent),
    clipped: clipped,
  };
  document.body.setAttribute("data-measured", JSON.stringify(result));
});
</script>
"""


def render(page: str, tmp_path: Path) -> dict[str, object]:
    """Render ``page`` in headless Chromium and return what its script measured."""
    path = tmp_path / "page.html"
    path.write_text(page.replace("</body>", MEASURE + "</body>"))
    done = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
         "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    found = re.search(r'data-measured="([^"]*)"', done.stdout)
    assert found is not None, f"chromium rendered no measurement (exit {done.returncode}): {done.stderr[-500:]}"
    raw = found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    measured: dict[str, object] = json.loads(raw)
    return measured


def test_the_race_picture_renders_whole_with_labelled_marks(tmp_path: Path) -> None:
    bug = scenarios.explore("unregister-no-release", reproduce=0).bugs[0]
    timeline = bug.timeline
    m = render(timeline.html("unregister-no-release: use-after-free"), tmp_path)
    assert m["clipped"] == []  # the title, lane names, mark labels and the problem's label all fit
    assert [round(v) for v in (m["width"], m["height"])] == m["declared"]  # rendered at its own size
    assert m["width"] >= 600  # sized to its content, not a 290 px strip
    assert str(m["title"]).startswith("unregister-no-release: use-after-free: ")
    assert m["lanes"] == ["A", "B"]
    assert m["steps"] == len(timeline.steps)
    assert any("kfree KFDProcess" in str(t) for t in m["frees"])  # type: ignore[attr-defined]
    assert m["allocs"] == 1
    assert any("use-after-free" in str(t) for t in m["problem"])  # type: ignore[attr-defined]
    assert {"lock", "SRCU / frees", "callback walk", "allocation", "free", "problem"} <= set(m["legend"])  # type: ignore[arg-type]


def test_the_run_picture_groups_background_callbacks_into_one_lane_each(tmp_path: Path) -> None:
    from mmu_notifier.workload.default import DEFAULT
    from mmu_notifier.workload.runner import run_deterministic

    result = run_deterministic(DEFAULT, seed=0)
    timeline = result.timeline
    assert isinstance(timeline, Timeline)
    m = render(timeline.html("run"), tmp_path)
    lanes = [str(lane) for lane in m["lanes"]]  # type: ignore[attr-defined]
    assert not any("#" in lane for lane in lanes)  # no lane per SRCU callback or kworker instance
    assert sum("srcu" in lane for lane in lanes) <= 1
    assert len(lanes) <= 16
    assert m["clipped"] == []
    assert float(m["width"]) <= 4500  # type: ignore[arg-type]
