#!/usr/bin/env bash
# Core dependencies only: a second fresh virtual environment with `pip install -e .` (no
# extras, so no tensorboardX, matplotlib, torch or pytest), in which the complete training
# script of docs/training.md must run to the end, twice (the second run finds the run finished
# and must return its last evaluation instead of crashing). The script is taken from the
# Markdown by tests/_doc_blocks.py with the small step count of its `doc-test: args` comment.
# Checks: both runs exit 0; the missing optional outputs are announced exactly once per run;
# the final checkpoint and metrics.jsonl are written and no TensorBoard/PNG output is.
# Called from .ci/run; usable alone: `.ci/core_deps_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
start=$(date +%s)
python -m pip install -q -e . >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; echo "core_deps_check: pip install -e . failed" >&2; exit 1; }
echo "core_deps_check: pip install -e . ($(($(date +%s) - start)) s)"

fail() {
    echo "core_deps_check: $*" >&2
    exit 1
}

present=$(python -c "
import importlib.util
print(' '.join(m for m in ('tensorboardX', 'matplotlib', 'torch', 'pytest')
               if importlib.util.find_spec(m)))")
[[ -z "$present" ]] || fail "the core install pulled in optional packages: $present"

for attempt in first rerun; do
    log="$tmp/$attempt.log"
    if ! python tests/_doc_blocks.py run docs/training.md --workdir "$tmp/blocks" >"$log" 2>&1; then
        cat "$log"
        fail "the docs/training.md script failed ($attempt run) with core dependencies only"
    fi
    announced=$(grep -c "OptionalOutputWarning" "$log" || true)
    [[ "$announced" == 1 ]] || { cat "$log"; fail "expected one OptionalOutputWarning ($attempt run), got $announced"; }
    grep -q "^{'loss': " "$log" || { cat "$log"; fail "no evaluation printed ($attempt run)"; }
    echo "core_deps_check: $attempt run ok ($(($(date +%s) - start)) s so far): $(grep "^{'loss': " "$log")"
done

run_dir=$(find "$tmp/blocks" -type d -path "*/runs/demo" | head -n 1)
[[ -n "$run_dir" ]] || fail "the script wrote no runs/demo directory"
[[ -s "$run_dir/metrics.jsonl" ]] || fail "no metrics.jsonl in $run_dir"
[[ -n "$(find "$run_dir/checkpoints" -mindepth 1 -maxdepth 1 -name '[0-9]*' -type d)" ]] ||
    fail "no checkpoint in $run_dir/checkpoints"
[[ ! -e "$run_dir/tensorboard" && ! -e "$run_dir/learning_curves.png" ]] ||
    fail "optional outputs were written without their packages"
echo "core_deps_check: ok (files: $(cd "$run_dir" && ls | tr '\n' ' '))"
