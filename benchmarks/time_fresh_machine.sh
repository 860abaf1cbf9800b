#!/usr/bin/env bash
# Time the main job as a fresh machine runs it: a clean clone of this repository's HEAD, a
# new virtual environment, no pip cache, empty model/data caches, and a PATH without Graphviz
# (dot) and other tools a CI machine may lack. Then the README's first command, with any
# arguments given here appended (e.g. --seed 2 --out runs/w3).
#
#   bash benchmarks/time_fresh_machine.sh --seed 2 --out "$PWD/runs/w3"
#
# Prints FRESH_TOTAL_SECONDS at the end; the run's results.json has the per-step timings.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
hidden="dot diff fatbinary fc-list java less nvcc rustc"
mkdir -p "$work/bin"
for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  [ -d "$dir" ] || continue
  for f in "$dir"/*; do
    name="$(basename "$f")"
    case " $hidden " in *" $name "*) continue ;; esac
    [ -e "$work/bin/$name" ] || ln -s "$f" "$work/bin/$name"
  done
done
git clone -q "$repo" "$work/main"
cd "$work/main"
export PATH="$work/bin" PIP_NO_CACHE_DIR=1 EFFICIENTBERT_CACHE="$work/cache" HF_HOME="$work/hf"
start=$(date +%s)
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
# --- the README's first command (keep identical), then this script's arguments ---
pip install torch==2.13.0 && pip install -e . && efficientbert run "$@"
echo "FRESH_TOTAL_SECONDS $(( $(date +%s) - start ))"
echo "work folder (clone, venv, caches): $work"
