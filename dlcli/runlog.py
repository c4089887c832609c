"""Metrics of a run: one JSON object per evaluation in `metrics.jsonl`, mirrored to
TensorBoard event files in `tb/`. On resume both are cut back to the checkpoint's step,
so a resumed run's log reads as if it had never stopped."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from tensorboardX import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.tensorboard = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge, flush_secs=10)

    def write(self, record: dict) -> None:
        """`record` holds `step`, `epoch` and flat metric names such as `val/loss`."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("step", "epoch") and isinstance(value, (int, float)):
                self.tensorboard.add_scalar(name, value, record["step"])

    def close(self) -> None:
        self.tensorboard.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
