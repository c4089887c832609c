#!/usr/bin/env bash
# One experiment over several seeds, then the mean and standard deviation of every test
# metric (the GAN experiments report their figures this way). Runs go to
# OUT/seed<S> (resumed if already there), WORKERS at a time; extra arguments go to
# `dlcli train` (e.g. --data-dir ../shared/data, --set model.init=flax).
#
#   bash experiments/seeds.sh CONFIG [SEEDS] [OUT] [dlcli train args...]
#   (default: 5 seeds into runs/<config name>_seeds; WORKERS=1)
set -euo pipefail
config=$1
seeds=${2:-5}
out=${3:-runs/$(basename "$config" .yaml)_seeds}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
seq 0 $((seeds - 1)) | xargs -P "${WORKERS:-1}" -I{} sh -c '
  seed=$2; run="$1/seed$seed"; shift 2
  if [ -f "$run/summary.json" ]; then exit 0; fi
  resume=""; [ -d "$run/checkpoints" ] && resume=--resume
  dlcli train "$0" --seed "$seed" --run-dir "$run" $resume --json "$@" > "$run.json" 2> "$run.log" \
    || { echo "seed $seed failed: $(tail -n 1 "$run.log")" >&2; exit 1; }
' "$config" "$out" {} "$@" 2>&1 | sed 's/^/  /' || true
python3 - "$out" "$seeds" <<'PY'
import json, math, sys
from pathlib import Path
out, seeds = Path(sys.argv[1]), int(sys.argv[2])
runs = [json.loads((out / f"seed{s}" / "summary.json").read_text()) for s in range(seeds)
        if (out / f"seed{s}" / "summary.json").exists()]
print(f"{out}: {len(runs)} of {seeds} seeds finished")
for name in sorted({k for r in runs for k in r["metrics"] if k.startswith("test/")}):
    values = [r["metrics"][name] for r in runs]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    print(f"  {name:<24} {mean:10.4f} ± {std:.4f}   ({', '.join(f'{v:.4g}' for v in values)})")
print(f"  wall_s per run           {sum(r['wall_s'] for r in runs) / max(len(runs), 1):10.1f}")
PY
