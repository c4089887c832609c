"""Metrics of a run: one JSON object per evaluation in `metrics.jsonl`, mirrored to
TensorBoard event files in `tb/`. On resume both are cut back to the checkpoint's step,
so a resumed run's log reads as if it had never stopped; a line that is not a record (a
write cut short by a kill) is dropped then, and skipped by every reader.

TensorBoard also gets what only it shows: the training metrics every few steps
(`train_step/...`, `write_scalars`), the test metrics at the last step (`finish`), and
the HParams plugin's session of the run, its flattened config as hyperparameters,
written into the run's own tb/ folder: `tensorboard --logdir` of a folder of runs (a
comparison, a sweep) reads them all as one HParams table, each run a row, every scalar
tag a metric column (the last value: test/... for a finished run). The plugin's
experiment summary is left out on purpose: TensorBoard then builds the table from every
run's hyperparameters, where one summary would fix the columns to one run's keys (the
model keys of a comparison's other arm would be missing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dlcli.files import write_atomically

_command: list[str] | None = None  # what `dlcli` was asked to do, as `record_command` saw it


def record_command(args: list[str]) -> None:
    """Remember the command line `dlcli ARGS` of the command this process runs now (a
    worker of compare and sweep runs several, none of them in its own sys.argv)."""
    global _command
    _command = ["dlcli", *args]


def command_line() -> list[str]:
    """The command line of the dlcli command running now, as a list of arguments; outside
    one (the Python API), the process's own."""
    return list(_command) if _command is not None else list(sys.argv)


def flat_config(tree: dict, prefix: str = "") -> dict:
    """Every leaf of a nested config mapping under its dotted key, in order:
    {"model.name": "mlp", "optimizer.learning_rate": 0.001, "model.dense": [16], ...}."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def hparam_values(config: dict) -> dict[str, str | float | bool]:
    """A config (nested mapping) as HParams values: numbers, strings and booleans as
    they are, a list or a mapping as its compact JSON text; empty values are left out."""
    values = {}
    for key, value in flat_config(config).items():
        if value is None:
            continue
        values[key] = value if isinstance(value, (str, bool, int, float)) else json.dumps(value, separators=(",", ":"))
    return values


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None = None, config: dict | None = None):
        """Open the log for appending; `resume_step`: first cut it back to the records up to
        that step (`dropped_lines` counts the lines that were not records). `config`
        (nested mapping) starts the run's HParams session: a new run's only; a resumed
        run's tb/ holds it already."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.dropped_lines = 0
        if resume_step is not None and self.path.exists():
            records, self.dropped_lines = _parse(self.path.read_text(errors="replace"))
            write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records if r["step"] <= resume_step))
        SummaryWriter = _summary_writer_class()
        purge = resume_step + 1 if resume_step is not None else None
        # a queue of 10 events (tensorboardX's default) is full after one chunk of steps
        # logged at every step, and then the loop waits for the writer thread at each event
        self.tensorboard = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge, flush_secs=10, max_queue=1000)
        if config is not None and resume_step is None:
            self.tensorboard.file_writer.add_summary(_hparams_summaries(config)[0], global_step=0)

    def write(self, record: dict) -> None:
        """`record` holds `step`, `epoch` and flat metric names such as `val/loss`."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.write_scalars(record["step"], {name: value for name, value in record.items()
                                            if name not in ("step", "epoch") and isinstance(value, (int, float))})

    def write_scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard only: scalars at `step` (`train_step/loss` between evaluations), all
        in one event (the loop's thread pays per event, about 30 us, whatever it holds)."""
        from tensorboardX.proto.summary_pb2 import Summary

        if values:
            summary = Summary(value=[Summary.Value(tag=name, simple_value=float(value)) for name, value in values.items()])
            self.tensorboard.file_writer.add_summary(summary, global_step=step)

    def finish(self, step: int, metrics: dict[str, float], config: dict) -> None:
        """A finished run: its final `metrics` (test/..., best/...) as scalars at `step`,
        then the end of its HParams session (success)."""
        self.write_scalars(step, metrics)
        self.tensorboard.file_writer.add_summary(_hparams_summaries(config)[1], global_step=step)

    def close(self) -> None:
        self.tensorboard.close()


def _hparams_summaries(config: dict):
    """The HParams plugin's (session start, session end) summaries of a run of `config`."""
    from tensorboardX.summary import hparams

    _experiment, start, end = hparams(hparam_values(config), {})
    return start, end


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch: where torch is installed,
    tensorboardX imports it (about 1.5 s of every run's start) only to recognise torch
    tensors, which dlcli never logs. `import torch` is made to fail during the import,
    as if torch were absent, unless something in this process imported it already."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # an import of a module set to None raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


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
