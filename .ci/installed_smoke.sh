#!/usr/bin/env bash
# What a user gets is the wheel, not this checkout: build it, install it (not
# editable) into a fresh virtualenv, and from a folder outside the checkout run
# the installed command through a short end-to-end job on a tiny phantom cohort.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip build
"$work/venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" >/dev/null
"$work/venv/bin/pip" install -q "$(ls "$work"/dist/spinefeat-*.whl)[jpeg]"
cd "$work"   # outside the checkout: nothing can be imported from it
sf="$work/venv/bin/spinefeat"
"$work/venv/bin/python" - <<'PY'
import spinefeat, sys
assert "site-packages" in spinefeat.__file__, spinefeat.__file__
print("installed package:", spinefeat.__file__)
PY
"$sf" --version
"$sf" features >/dev/null && echo "features: ok"
"$sf" synth cohort --studies 8 --test-studies 2 --seed 3 --jobs 2
"$sf" train cohort --out models --folds 2 --jobs 2
"$sf" predict cohort --models models --out submission.csv --jobs 2
"$sf" evaluate submission.csv --labels cohort/truth/test_labels.csv
echo "installed-wheel smoke run: ok"
