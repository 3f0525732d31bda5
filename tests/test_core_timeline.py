"""Swimlane pictures of an explorer failure and of a replay."""

from __future__ import annotations

import pytest

from mmu_notifier.cli import main


def test_explorer_failure_is_drawn_with_the_race_marked(tmp_path, capsys):
    picture = tmp_path / "race.svg"
    assert main(["explore", "unregister-no-release", "--strategy", "pct", "--budget", "200",
                 "--timeline", str(picture)]) == 1
    text = picture.read_text()
    assert text.startswith("<svg")
    assert ">A</text>" in text and ">B</text>" in text  # one lane per thread
    assert 'stroke="red"' in text and "use-after-free" in text  # the access that failed
    assert 'data-op="walk"' in text and 'data-op="srcu_read_lock"' in text


def test_replay_draws_html_with_a_legend(tmp_path, capsys):
    main(["explore", "unregister-no-release", "--strategy", "pct", "--budget", "200"])
    schedule = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("schedule:"))
    page = tmp_path / "replay.html"
    assert main(["replay", "unregister-no-release", schedule, "--timeline", str(page)]) == 1
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "callback walk" in text and "<svg" in text


@pytest.mark.parametrize("command", [["explore", "get-put"], ["run"]])
def test_timeline_needs_svg_or_html(command, tmp_path, capsys):
    assert main([*command, "--timeline", str(tmp_path / "t.png")]) == 2
    assert ".svg or .html" in capsys.readouterr().err
