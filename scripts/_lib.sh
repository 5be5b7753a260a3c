# shellcheck shell=bash
# Sourced by the scripts in this folder (not run directly): moves to the repository root
# and picks the Python environment whose tools (buf, ruff, mypy, protoc plugins) are used.
#
# The environment is, first found wins: $PYTHON, the active virtualenv ($VIRTUAL_ENV),
# ./.venv (what .ci/run creates), then python3 on PATH. Its scripts directory goes first
# on PATH so that `buf` and the protoc-gen-mypy plugins come from the same environment.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PY=$VIRTUAL_ENV/bin/python
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=$(command -v python3)
fi
BIN=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$BIN:$PATH"

# need TOOL...: fail early, with the fix, when a tool is missing from the environment.
need() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "error: '$tool' not found in $BIN; run: $PY -m pip install -e '.[dev]'" >&2
            exit 2
        fi
    done
}

# step LABEL CMD...: print what runs, then run it.
step() {
    local label=$1
    shift
    printf '==> %s: %s\n' "$label" "$*"
    "$@"
}
