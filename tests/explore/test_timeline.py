"""The one room for timelines: text lanes, JSON, and the SVG/HTML picture of the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmu_notifier import scenarios
from mmu_notifier.explore import Step, Timeline

RACE = "mx1:unregister-no-release:09d28813:91a731f1:b2a6b2a4b2"


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return scenarios.replay("unregister-no-release", RACE).timeline


def test_every_form_shows_every_step(timeline: Timeline) -> None:
    assert all(isinstance(step, Step) for step in timeline.steps)
    assert len(timeline.text().splitlines()) == len(timeline.steps) + 2  # header, steps, the problem line
    doc = timeline.to_json()
    assert [s["step"] for s in doc["steps"]] == [s.index for s in timeline.steps]
    assert timeline.svg().count("<rect ") == len(timeline.steps)


def test_the_picture_marks_the_problem_and_the_page_has_a_legend(timeline: Timeline) -> None:
    assert timeline.problem is not None
    picture = timeline.svg("race")
    assert picture.startswith("<svg") and 'stroke="red"' in picture and "use-after-free" in picture
    page = timeline.html("race")
    assert page.startswith("<!doctype html>") and "<li>" in page and picture in page


@pytest.mark.parametrize(("suffix", "start"), [(".svg", "<svg"), (".html", "<!doctype html>"), (".htm", "<!doctype")])
def test_write_draws_by_the_file_suffix(timeline: Timeline, tmp_path: Path, suffix: str, start: str) -> None:
    target = tmp_path / f"t{suffix}"
    timeline.write(target, "t")
    assert target.read_text().startswith(start)


def test_write_refuses_another_suffix(timeline: Timeline, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected a \.svg or \.html name"):
        timeline.write(tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()
