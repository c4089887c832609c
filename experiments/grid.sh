#!/usr/bin/env bash
# A scripted sweep: drive `dlcli train` over a grid from the shell and collect each
# run's --json result into one table. Exit codes of dlcli: 0 success, 2 bad input,
# 1 a failure during training; a failed run is reported and the grid goes on.
#
#   bash experiments/grid.sh [OUT_DIR]        (default: runs/grid; EPOCHS=15 per run)
#   LRS="0.001 0.01" WIDTHS=128 bash experiments/grid.sh   (another grid; defaults below)
set -uo pipefail
out=${1:-runs/grid}
epochs=${EPOCHS:-15}
learning_rates=${LRS:-0.0003 0.001 0.003}
widths=${WIDTHS:-64 256}
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
for lr in $learning_rates; do
  for width in $widths; do
    run="$out/lr${lr}-w${width}"
    if dlcli train experiments/mlp_digits.yaml --run-dir "$run" --overwrite \
        --set optimizer.learning_rate=$lr --set model.width=$width --set training.epochs=$epochs \
        --json > "$run.json" 2> "$run.log"; then
      cat "$run.json" >> "$results"
    else
      echo "run $run failed with exit code $?: $(tail -n 1 "$run.log")" >&2
    fi
  done
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rows.sort(key=lambda r: -r["metrics"]["val/accuracy"])
print(f"{'run':<28} {'params':>8} {'val/accuracy':>13} {'test/accuracy':>14} {'wall_s':>7}")
for r in rows:
    m = r["metrics"]
    print(f"{r['run_dir'].split('/')[-1]:<28} {r['params']:>8} {m['val/accuracy']:>13.4f} {m['test/accuracy']:>14.4f} {r['wall_s']:>7.1f}")
PY
