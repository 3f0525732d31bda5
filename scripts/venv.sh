# Sourced by scripts/run and scripts/test: make .venv and install the core and every plugin of this repo
# (the driver plugins under plugins/ and the example third-party plugin under examples/).
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mmu-notifier needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
venv="${MMU_NOTIFIER_VENV:-$repo/.venv}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
plugins=()
for plugin in "$repo"/plugins/*/ "$repo"/examples/*/; do
  [ -f "$plugin/pyproject.toml" ] && plugins+=(-e "$plugin")
done
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[${MMU_NOTIFIER_EXTRAS:-test}]" "${plugins[@]}"
export PATH="$venv/bin:$PATH"
