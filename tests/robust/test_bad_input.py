"""A sweep of bad files and flags: one line, exit 2, no traceback, nothing written (issue 16, items 1, 2, 8).

Every case is refused before the first step runs and before anything is
allocated for it: a count such as ``background.reclaim = 2e9`` or a schedule
such as ``a99999999999`` is a one-line error, not a ``MemoryError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mmu_notifier.cli import main

GOOD_PROCESS = '[[processes]]\nname = "p"\nsteps = [{op = "mmap"}]\n'

Setup = Callable[[Path], list[str]]


def _file(name: str, data: bytes | str, *argv: str) -> Setup:
    """A case whose input is a file ``name`` with ``data``, passed as ``argv`` ("{}" is its path)."""

    def setup(tmp: Path) -> list[str]:
        path = tmp / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return [arg.replace("{}", str(path)) for arg in argv]

    return setup


def _argv(*argv: str) -> Setup:
    return lambda tmp: [arg.replace("{tmp}", str(tmp)) for arg in argv]


YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
) + 'processes: [{name: p, steps: [{op: mmap}]}]\n'

CASES: dict[str, tuple[Setup, str]] = {
    # workload files
    "workload utf-16": (_file("w.toml", GOOD_PROCESS.encode("utf-16"), "run", "{}"), "not UTF-8"),
    "workload latin-1": (_file("w.toml", 'name = "caf\xe9"\n'.encode("latin-1") + GOOD_PROCESS.encode(), "run", "{}"),
                         "not UTF-8"),
    "workload toml nested": (_file("w.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n", "run", "{}"), "nested"),
    "workload yaml nested": (_file("w.yaml", "x: " + "[" * 5000 + "]" * 5000 + "\n", "run", "{}"), "nested"),
    "workload yaml bomb": (_file("w.yaml", YAML_BOMB, "run", "{}"), "values"),
    "workload count huge": (_file("w.toml", GOOD_PROCESS + "count = 100000\n", "run", "{}"),
                            "processes.0.count"),
    "workload processes in all": (_file("w.toml", (GOOD_PROCESS + "count = 6000\n") * 2, "run", "{}"),
                                  "12000 processes in all"),
    "workload reclaim 2e9": (_file("w.toml", "[background]\nreclaim = 2e9\n" + GOOD_PROCESS, "run", "{}"),
                             "background.reclaim"),
    "workload repeat huge": (_file("w.toml", GOOD_PROCESS + "repeat = 1e12\n", "run", "{}"), "processes.0.repeat"),
    "workload pages huge": (_file("w.toml", '[[processes]]\nname = "p"\nsteps = [{op = "mmap", pages = 99999999}]\n',
                                  "run", "{}"), "pages"),
    "workload misspelt driver": (
        _file("w.toml", '[[processes]]\nname = "p"\nsteps = [{op = "attach", driver = "gur"}]\n', "run", "{}"),
        "processes.0.steps.0.driver",
    ),
    "workload config for no driver": (_file("w.toml", "[driver_configs.nosuch]\nx = 1\n" + GOOD_PROCESS, "run", "{}"),
                                      "driver_configs.nosuch"),
    "workload missing": (_argv("run", "{tmp}/none.toml"), "none.toml"),
    "workload is a directory": (_argv("run", "{tmp}/adir.toml"), "adir.toml"),
    "workload suffix": (_file("w.json", "{}", "run", "{}"), "expected a .toml"),
    "workload empty": (_file("w.toml", "", "run", "{}"), "processes"),
    "workload garbage": (_file("w.yaml", "\x00\x01: [", "run", "{}"), "w.yaml"),
    # --config and the environment
    "config utf-16": (_file("c.toml", "[drivers.gru]\n".encode("utf-16"), "run", "--config", "{}"), "not UTF-8"),
    "config missing": (_argv("run", "--config", "{tmp}/none.toml"), "--config"),
    "config nested": (_file("c.toml", "[drivers.gru]\nx = " + "[" * 3000 + "]" * 3000 + "\n", "drivers", "--config",
                            "{}"), "nested"),
    "config unknown driver": (_file("c.toml", "[drivers.nosuch]\nx = 1\n", "run", "--config", "{}"),
                              "[drivers.nosuch]"),
    # run flags and output paths
    "threads 0": (_argv("run", "--threads", "0"), "--threads"),
    "threads huge": (_argv("run", "--threads", "100000"), "--threads"),
    "threads with timeline": (_argv("run", "--threads", "2", "--timeline", "{tmp}/t.svg"), "--timeline"),
    "timeline missing dir": (_argv("run", "--timeline", "{tmp}/nodir/t.svg"), "does not exist"),
    "timeline suffix": (_argv("run", "--timeline", "{tmp}/t.txt"), ".svg"),
    "watchdog 0": (_argv("run", "--watchdog", "0"), "--watchdog"),
    "seed huge": (_argv("run", "--seed", str(2**70)), "--seed"),
    "threads not a number": (_argv("run", "--threads", "many"), "--threads"),
    # explore and replay
    "explore output missing dir": (_argv("explore", "abba-deadlock", "--output", "{tmp}/nodir/r.json"),
                                   "does not exist"),
    "explore budget 0": (_argv("explore", "abba-deadlock", "--budget", "0"), "--budget"),
    "explore unknown": (_argv("explore", "no-such-scenario"), "no-such-scenario"),
    "replay huge count": (_argv("replay", "abba-deadlock", "mx1:abba-deadlock:00000000:00000000:a99999999999"),
                          "longer than"),
    "replay huge sum": (_argv("replay", "abba-deadlock", "mx1:abba-deadlock:00000000:00000000:" + "a4000000b4000000"),
                        "longer than"),
    "replay garbage": (_argv("replay", "abba-deadlock", "garbage"), "schedule"),
    "replay bad fingerprint": (_argv("replay", "abba-deadlock", "mx1:abba-deadlock:xyz:00000000:a"), "fingerprint"),
    "replay output missing dir": (_argv("replay", "abba-deadlock", "mx1:abba-deadlock:00000000:00000000:a",
                                        "--output", "{tmp}/nodir/r.json"), "does not exist"),
    # conformance
    "conformance examples -1": (_argv("conformance", "--examples", "-1"), "--examples"),
    "conformance budget 0": (_argv("conformance", "--budget", "0"), "--budget"),
    "conformance unknown driver": (_argv("conformance", "nosuch"), "nosuch"),
    "conformance missing config": (_argv("conformance", "--config", "{tmp}/none.toml"), "--config"),
    "conformance junit missing dir": (_argv("conformance", "--junitxml", "{tmp}/nodir/j.xml"), "does not exist"),
    "conformance watchdog 0": (_argv("conformance", "--watchdog", "0"), "--watchdog"),
    # drivers
    "drivers schema unknown": (_argv("drivers", "--schema", "nosuch"), "nosuch"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, expected = CASES[case]
    (tmp_path / "adir.toml").mkdir()
    argv = setup(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    started = time.monotonic()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (captured.out, captured.err)
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("mmu-notifier"), err
    assert expected in err, err
    assert "Traceback" not in captured.err + captured.out
    assert captured.out == ""  # refused before any work: no summary, no report
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    assert time.monotonic() - started < 20


def test_environment_variable_for_no_driver_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MMU_NOTIFIER_NOSUCH__QUEUES", "4")
    assert main(["drivers"]) == 2
    err = capsys.readouterr().err
    assert "MMU_NOTIFIER_NOSUCH__QUEUES" in err and err.count("\n") == 1


def test_internal_error_is_one_line_asking_for_a_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmu_notifier import cli

    def broken(args: object) -> int:
        raise ZeroDivisionError("model bug")

    monkeypatch.setattr(cli, "_cmd_drivers", broken)
    assert cli.main(["drivers"]) == cli.EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "please report" in err and "ZeroDivisionError: model bug" in err
    assert "Traceback" not in err
    assert cli.main(["drivers", "--debug"]) == cli.EX_SOFTWARE
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_is_exit_130_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmu_notifier import cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_drivers", interrupted)
    assert cli.main(["drivers"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
