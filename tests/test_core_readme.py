"""The README's tour is executable documentation: run its Python blocks as written."""

from __future__ import annotations

import re
from pathlib import Path

from mmu_notifier.kmem import is_freed

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python tour"
    namespace: dict[str, object] = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    # the tour asserts its own steps; at its end the subscription has been freed
    assert is_freed(namespace["sub"])


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in lines[:8] if line.startswith("./scripts/")]
    assert commands == ["./scripts/run", "./scripts/test"]
    root = README.parent
    assert all((root / command).exists() for command in commands)
