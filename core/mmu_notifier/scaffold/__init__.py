"""``mmu-notifier new-plugin NAME``: write a new driver plugin in the common shape, green from the start.

The generated plugin is what ``docs/plugin-guide.md`` section 5 describes
(pyproject with the ``mmu_notifier.drivers`` entry point, a config with a
``scheme`` switch named by kernel version, the per-mm kernel object, a device
with translations, the pre-series scheme in ``legacy.py``, an exerciser, one
explorer scenario, tests, README and ``py.typed``). It models a generic
mirror device converted to ``mmu_notifier_get``/``put`` in the way the 5.4
series converted its drivers, and passes the conformance kit as generated:
an author renames and rewrites from a working driver instead of from a blank
page (the kernel side has no such thing; this is the model's counterpart of
``cookiecutter-pytest-plugin`` and ``datasette-plugin``).

The templates are package data (``templates/*.tmpl``) rendered with
:class:`string.Template`; nothing here imports the model, so the command is
cheap and cannot be broken by a plugin.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmu_notifier.errors import UsageError

__all__ = ["FILES", "NAME_PATTERN", "PluginNames", "check_name", "core_requirement", "new_plugin", "render"]

#: a driver name: lower case, starts with a letter, letters digits and single underscores (it names the entry
#: point, the package ``mmu_notifier_<name>``, the config table ``[drivers.<name>]`` and the environment
#: variables ``MMU_NOTIFIER_<NAME>__<FIELD>``, whose ``__`` separator a name must therefore not contain)
NAME_PATTERN = re.compile(r"[a-z](?:_?[a-z0-9])*")
#: longest accepted name (it becomes part of package, class and distribution names)
MAX_NAME = 32

#: (path in the new plugin, template file); paths are templates too
FILES: tuple[tuple[str, str], ...] = (
    ("pyproject.toml", "pyproject.toml.tmpl"),
    ("README.md", "README.md.tmpl"),
    ("${package}/__init__.py", "init.py.tmpl"),
    ("${package}/config.py", "config.py.tmpl"),
    ("${package}/${name}_mm.py", "mm.py.tmpl"),
    ("${package}/device.py", "device.py.tmpl"),
    ("${package}/legacy.py", "legacy.py.tmpl"),
    ("${package}/exerciser.py", "exerciser.py.tmpl"),
    ("${package}/scenarios.py", "scenarios.py.tmpl"),
    ("${package}/py.typed", "py.typed.tmpl"),
    ("tests/test_${name}_driver.py", "test_driver.py.tmpl"),
    ("tests/test_${name}_conformance.py", "test_conformance.py.tmpl"),
    ("tests/test_${name}_scenarios.py", "test_scenarios.py.tmpl"),
)


@dataclass(frozen=True)
class PluginNames:
    """Every name the templates use, derived from the driver name."""

    name: str
    #: ``MMU_NOTIFIER_<NAME>__<FIELD>`` uses it
    upper: str
    #: class-name prefix: ``foo_bar`` -> ``FooBar``
    cls: str
    package: str
    distribution: str
    core_requirement: str

    def mapping(self) -> dict[str, str]:
        """The substitutions of :func:`render`."""
        return {
            "name": self.name,
            "NAME": self.upper,
            "Class": self.cls,
            "package": self.package,
            "dist": self.distribution,
            "core_requirement": self.core_requirement,
            "own_imports": self.own_imports(),
            "test_imports": self.test_imports(),
        }

    def own_imports(self) -> str:
        """The driver module's imports of its own package, in the order ruff's isort wants for this name."""
        imports = {
            f"{self.package}.config": f"{self.cls}Config",
            f"{self.package}.device": "DeviceMapping",
            f"{self.package}.{self.name}_mm": f"{self.cls}File, {self.cls}MM, Scheme54",
            f"{self.package}.legacy": "Scheme53",
        }
        return "\n".join(f"from {module} import {_sorted(names)}" for module, names in sorted(imports.items()))

    def test_imports(self) -> str:
        """The unit tests' import of the package's names, sorted as ruff's isort wants for this name."""
        return f"from {self.package} import {_sorted(f'{self.cls}Config, {self.cls}Driver, {self.cls}MM')}"


def _sorted(names: str) -> str:
    """``"B, A"`` -> ``"A, B"`` in isort's order by type: CONSTANTS, then Classes, then the rest."""
    items = [name.strip() for name in names.split(",")]

    def key(name: str) -> tuple[int, str]:
        rank = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
        return rank, name

    return ", ".join(sorted(items, key=key))


def core_requirement(version: str) -> str:
    """The core version range a plugin written against core ``version`` needs: same major.minor series.

    Before 1.0 a minor release may change the public API (see CHANGELOG.md), so
    ``0.1.3`` gives ``mmu-notifier>=0.1,<0.2``; from 1.0 on, ``>=1.2,<2``.
    """
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    if major == 0:
        return f"mmu-notifier>={major}.{minor},<{major}.{minor + 1}"
    return f"mmu-notifier>={major}.{minor},<{major + 1}"


def check_name(name: str) -> PluginNames:
    """The names of a plugin called ``name``; :class:`UsageError` (one line) for a name that cannot be one."""
    if not NAME_PATTERN.fullmatch(name) or len(name) > MAX_NAME or keyword.iskeyword(name):
        raise UsageError(
            f"new-plugin: {name!r} is not a driver name: use lower-case letters, digits and single underscores, "
            f"starting with a letter, at most {MAX_NAME} characters (e.g. 'my_gpu')"
        )
    from mmu_notifier import __version__

    return PluginNames(
        name=name,
        upper=name.upper(),
        cls="".join(part.capitalize() for part in name.split("_")),
        package=f"mmu_notifier_{name}",
        distribution=f"mmu-notifier-{name.replace('_', '-')}",
        core_requirement=core_requirement(__version__),
    )


def render(names: PluginNames) -> dict[str, str]:
    """Every file of the plugin: relative path -> text (the templates with ``names`` substituted)."""
    folder = resources.files(__package__).joinpath("templates")
    values = names.mapping()
    return {
        string.Template(path).substitute(values): string.Template(folder.joinpath(template).read_text()).substitute(
            values
        )
        for path, template in FILES
    }


def new_plugin(name: str, directory: Path | None = None) -> tuple[Path, list[Path]]:
    """Write the plugin ``name`` into ``directory`` (default ``./mmu-notifier-<name>``), which must not exist.

    Returns the directory and the files written. Raises :class:`UsageError`
    before writing anything for a bad name or an existing path.
    """
    names = check_name(name)
    target = directory if directory is not None else Path(names.distribution)
    if target.exists():
        raise UsageError(f"new-plugin: {target} already exists; name a new directory with --dir PATH")
    files = render(names)
    try:
        target.mkdir(parents=True)
    except OSError as error:
        raise UsageError(f"new-plugin: cannot create {target}: {error.strerror or error}") from error
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return target, written
