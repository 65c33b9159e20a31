#!/usr/bin/env bash
# The issue's acceptance check: 100 WAV files of random digit strings (1-8 digits, spoken as
# digit words) synthesised by plain espeak-ng (default rate and pitch, no noise) with the voices
# that `voices --split test` lists, transcribed by a trained run; prints the CER (jiwer).
# Usage: experiments/results/speech/wav_check.sh WORKDIR [N] [BEAM]
set -euo pipefail
workdir="$1"; n="${2:-100}"; beam="${3:-0}"
out="${WAV_CHECK_DIR:-$(mktemp -d)}"; mkdir -p "$out"
mapfile -t voices < <(python -m experiments.speech voices --split test)
words=(zero one two three four five six seven eight nine)
RANDOM=12345
: > "$out/refs.txt"
for i in $(seq 1 "$n"); do
    k=$((RANDOM % 8 + 1)); digits=""; text=""
    for _ in $(seq 1 "$k"); do d=$((RANDOM % 10)); digits+="$d"; text+="${words[$d]} "; done
    voice="${voices[$((RANDOM % ${#voices[@]}))]}"
    espeak-ng -v "$voice" -w "$out/$i.wav" "$text"
    echo "$digits" >> "$out/refs.txt"
done
files=(); for i in $(seq 1 "$n"); do files+=("$out/$i.wav"); done
python -m experiments.speech transcribe --workdir "$workdir" --beam "$beam" "${files[@]}" > "$out/hyps.txt"
python - "$out/refs.txt" "$out/hyps.txt" <<'PY'
import sys
from seqjax.ctc import cer
refs = open(sys.argv[1]).read().splitlines()
hyps = open(sys.argv[2]).read().splitlines()
assert len(refs) == len(hyps), (len(refs), len(hyps))
print(f"{len(refs)} files: CER {cer(refs, hyps):.4f}, "
      f"string accuracy {sum(r == h for r, h in zip(refs, hyps)) / len(refs):.3f}")
PY
