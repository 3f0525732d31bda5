# Sourced by scripts/run and scripts/test: make .venv and install the core and every plugin of this repo
# (the driver plugins under plugins/ and the example third-party plugin under examples/).
# The install is recorded in .venv/.mmu-notifier-installed (a hash of every pyproject.toml, the
# interpreter and the extras); a re-run reinstalls only when one of those changed. The core's
# [distributed] extra (Dask, for explore --jobs N --scheduler ADDRESS) is always installed with
# the chosen extras, so its test runs here and on CI.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mmu-notifier needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
venv="${MMU_NOTIFIER_VENV:-$repo/.venv}"
extras="${MMU_NOTIFIER_EXTRAS:-test}"
plugins=()
names=()
for plugin in "$repo"/plugins/*/ "$repo"/examples/*/; do
  if [ -f "$plugin/pyproject.toml" ]; then
    plugins+=(-e "$plugin")
    names+=("$(basename "$plugin")")
  fi
done
stamp="$venv/.mmu-notifier-installed"
state="$({ "$python" -c 'import sys; print(sys.version)'; cat "$repo/pyproject.toml" "$repo"/plugins/*/pyproject.toml "$repo"/examples/*/pyproject.toml 2>/dev/null; printf '%s\n' "${names[@]}"; } | sha256sum | cut -d' ' -f1)"
installed="$(cat "$stamp" 2>/dev/null || true)"
# "dev" includes "test": a venv set up by scripts/test serves scripts/run as it is.
if [ "$installed" != "$state $extras" ] && [ "$installed" != "$state dev" ]; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  echo "setting up $venv: the core [$extras,distributed] and ${#names[@]} plugins (${names[*]}); once per change of a pyproject.toml" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[$extras,distributed]" "${plugins[@]}"
  echo "$state $extras" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
