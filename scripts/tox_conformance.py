"""Run by tox's conformance environments: install the plugin the environment is named after, alone, and run the kit.

An environment ``conformance-py312-gru`` installs ``plugins/gru`` (or
``examples/gru``) into its fresh environment, which holds only the core, then
checks that exactly one driver is installed and runs the conformance kit on
it; extra arguments go to the kit. Deriving the plugin from the environment
name is what lets ``tox.ini`` list a new plugin in one line.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    env_name = os.environ.get("TOX_ENV_NAME", "")
    plugin = env_name.rsplit("-", 1)[-1]
    candidates = [REPO / "plugins" / plugin, REPO / "examples" / plugin]
    source = next((path for path in candidates if (path / "pyproject.toml").is_file()), None)
    if source is None:
        print(f"tox env {env_name!r}: no plugins/{plugin}/ or examples/{plugin}/ with a pyproject.toml",
              file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-e", str(source)], check=True)
    importlib.invalidate_caches()
    names = sorted(ep.name for ep in importlib.metadata.entry_points(group="mmu_notifier.drivers"))
    print(f"{env_name}: Python {sys.version.split()[0]}, installed drivers: {names}", flush=True)
    if len(names) != 1:
        print(f"{env_name}: expected exactly one installed driver (the plugin alone with the core)", file=sys.stderr)
        return 1
    kit = subprocess.run([sys.executable, "-m", "mmu_notifier.conformance", names[0], *argv], check=False)
    if kit.returncode != 0:
        return kit.returncode
    own_tests = source / "tests"
    if source.parent.name == "examples" and own_tests.is_dir():  # the example's own tests need only the kit's deps
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                               "-k", "not passes_the_conformance_kit", str(own_tests)], check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
