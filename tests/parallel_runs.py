"""Train one tiny experiment on several device placements in this process and print
each one's summary and metrics.jsonl records as JSON. Started by tests/test_parallel.py
in a subprocess whose XLA flags give it several CPU devices.

A placement is `DATA` or `DATA+fsdp` (parallel.data, parallel.fsdp); `A>B` trains on A,
cuts the run back to its first checkpoint (as a kill after that save leaves it) and
resumes it on B; its result also holds `dlcli eval`'s test metrics of the last
checkpoint on every device of the process.

    python tests/parallel_runs.py CONFIG|'' DATA_DIR PLACEMENT,... KEY=VALUE ...
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from dlcli.config import load_config
from dlcli.runs import RunDir
from dlcli.training.evaluate import evaluate_run
from dlcli.training.loop import fit


def train(config: str | None, data_dir: Path, overrides: list[str], placement: str, run_dir: Path,
          resume: bool = False) -> dict:
    data, _, fsdp = placement.partition("+")
    cfg = load_config(config, [*overrides, f"parallel.data={data}", f"parallel.fsdp={fsdp == 'fsdp'}"])
    return fit(cfg, run_dir, data_dir=data_dir, resume=resume, show_progress=False)


def main(config: str | None, data_dir: Path, overrides: list[str], placements: list[str]) -> dict:
    results = {}
    for placement in placements:
        folder = Path(tempfile.mkdtemp())
        first, _, then = placement.partition(">")
        summary = train(config, data_dir, overrides, first, folder / "run")
        result = {}
        if then:
            shutil.rmtree(folder / "run" / "checkpoints" / str(summary["steps"]))
            summary = train(config, data_dir, overrides, then, folder / "run", resume=True)
            result["eval"] = evaluate_run(folder / "run", checkpoint="latest", data_dir=data_dir)["metrics"]
        results[placement] = {**result, "summary": summary, "records": RunDir(folder / "run").metrics()}
    return results


if __name__ == "__main__":
    config, data_dir, placements, *overrides = sys.argv[1:]
    print(json.dumps(main(config or None, Path(data_dir), overrides, placements.split(","))))
