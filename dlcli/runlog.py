"""Metrics of a run: one JSON object per evaluation in `metrics.jsonl`, mirrored to
TensorBoard event files in `tb/`. On resume both are cut back to the checkpoint's step,
so a resumed run's log reads as if it had never stopped; a line that is not a record (a
write cut short by a kill) is dropped then, and skipped by every reader."""

from __future__ import annotations

import json
from pathlib import Path

from dlcli.files import write_atomically


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None):
        """Open the log for appending; `resume_step`: first cut it back to the records up to
        that step (`dropped_lines` counts the lines that were not records)."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.dropped_lines = 0
        if resume_step is not None and self.path.exists():
            records, self.dropped_lines = _parse(self.path.read_text(errors="replace"))
            write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records if r["step"] <= resume_step))
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
    """The records of `run_dir`'s metrics.jsonl, in order ([] when it has none)."""
    path = Path(run_dir) / "metrics.jsonl"
    return _parse(path.read_text(errors="replace"))[0] if path.is_file() else []


def _parse(text: str) -> tuple[list[dict], int]:
    """(the records among the lines of `text`, how many non-empty lines were not one)."""
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad += 1
    return records, bad
