#!/usr/bin/env bash
# `make test-latest`: the suite against the newest releases that pyproject.toml's ranges allow,
# in a throwaway copy of this checkout with its own .venv. uv.lock and ./.venv are not touched.
# A failure here, green under `make test`, is an upstream release that broke us: most often a
# private API that a hook in src/agents_pipelines/_compat/ uses (tests/test_compat.py names it).
# Usage: scripts/test_latest.sh [pytest arguments]   (default: the whole suite, two workers)
set -euo pipefail
UV=${UV:-.tools/bin/uv}
PYTHON=${PYTHON:-python3}
UV=$(realpath "$UV")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/agents_pipelines-latest.XXXXXX")
KEEP=${KEEP_LATEST_ENV:-0}
if [ "$KEEP" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
echo "test-latest: throwaway checkout in $WORK" >&2

# The files of this checkout as they are now (committed or not), without its environments.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
	[ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"

# Newest releases within the ranges: ignore uv.lock and resolve afresh (no cached metadata).
"$UV" pip compile pyproject.toml --extra dev --extra postgres --extra celery --upgrade \
	--refresh --quiet --python "$PYTHON" --no-header --output-file requirements-latest.txt
"$UV" venv --quiet --python "$PYTHON" .venv
"$UV" pip install --quiet --compile-bytecode --python .venv/bin/python -r requirements-latest.txt
"$UV" pip install --quiet --no-deps --python .venv/bin/python -e .

# What moved against the lock: the packages whose resolved release differs from uv.lock's.
.venv/bin/python - <<'PY'
import tomllib
from pathlib import Path

locked: dict[str, set[str]] = {}  # a package locked per Python version appears once each
for package in tomllib.loads(Path("uv.lock").read_text())["package"]:
    locked.setdefault(package["name"], set()).add(package.get("version", ""))
newer = []
for line in Path("requirements-latest.txt").read_text().splitlines():
    if "==" in line and not line.lstrip().startswith("#"):
        name, version = line.split(";")[0].strip().split("==")
        if version not in locked.get(name, set()):
            was = ", ".join(sorted(locked.get(name, set()))) or "(not locked)"
            newer.append(f"  {name}: {was} -> {version}")
print("test-latest: releases that differ from uv.lock:", *newer or ["  (none)"], sep="\n")
PY

if [ $# -eq 0 ]; then set -- -n 2 --dist loadgroup; fi
.venv/bin/python -m pytest "$@"
