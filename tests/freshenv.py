"""A fresh Python environment for packaging tests: the core's dependencies, none of this repository's packages.

Creating a venv and downloading pydantic, pluggy, pytest ... for every test
would be slow and need the network. Instead the fresh venv (made without pip)
reuses the *current* environment's site-packages through a ``.pth`` file that
points at a directory of links to every entry there **except** this
repository's own distributions (the core, every plugin, their editable-install
hooks). So the fresh environment has the third-party dependencies and tools
(pytest, hypothesis, pip, setuptools, build) but no ``mmu_notifier`` and no
driver until a test installs them, non-editable, from a source tree or a
wheel; ``importlib.metadata`` finds only what was installed there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: entries of site-packages that belong to this repository (never reused)
OWN_PREFIXES = ("mmu_notifier", "mmu-notifier", "__editable__", "distutils-precedence.pth")


class FreshEnv:
    """A venv in ``root`` that has the current environment's third-party packages and nothing of ours."""

    def __init__(self, root: Path) -> None:
        self.root = root
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root)
        self.python = root / ("Scripts" if os.name == "nt" else "bin") / "python"
        site = Path(self.run_python("-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
        reused = root / "reused-site-packages"
        reused.mkdir()
        current = Path(sysconfig.get_path("purelib"))
        for entry in current.iterdir():
            if not entry.name.lower().startswith(OWN_PREFIXES):
                (reused / entry.name).symlink_to(entry)
        (site / "_reuse_current_environment.pth").write_text(f"{reused}\n")

    def run(self, *args: str | Path, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run a command with the fresh environment's ``bin`` first on PATH; never raises on failure."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        return subprocess.run([str(a) for a in args], cwd=cwd or self.root, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def run_python(
        self, *args: str | Path, cwd: Path | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` in the fresh environment."""
        return self.run(self.python, *args, cwd=cwd, timeout=timeout)

    def pip_install(self, *targets: str | Path) -> None:
        """Install ``targets`` (source trees or wheels) without dependencies (they are reused) or build isolation."""
        done = self.run_python("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                               "--disable-pip-version-check", "--no-index", *targets)
        assert done.returncode == 0, f"pip install {targets} failed:\n{done.stdout}\n{done.stderr}"

    def distributions(self) -> list[str]:
        """Names of the mmu-notifier distributions installed in the fresh environment."""
        code = ("import importlib.metadata as m; print('\\n'.join(sorted({d.metadata['Name'] for d in "
                "m.distributions() if d.metadata['Name'].lower().startswith('mmu')})))")
        return self.run_python("-c", code).stdout.split()


def distribution_dirs() -> list[Path]:
    """Every distribution of this repository: the core, each plugin under plugins/, each example."""
    found = [REPO]
    for pattern in ("plugins/*/pyproject.toml", "examples/*/pyproject.toml"):
        found += sorted(path.parent for path in REPO.glob(pattern))
    return found


def build(source: Path, outdir: Path, *formats: str) -> list[Path]:
    """``python -m build`` (the standard front-end, isolated) of ``source`` into ``outdir``; returns what it made."""
    before = set(outdir.glob("*")) if outdir.exists() else set()
    done = subprocess.run([sys.executable, "-m", "build", *formats, "--outdir", str(outdir), str(source)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"python -m build {source} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return sorted(set(outdir.glob("*")) - before)
