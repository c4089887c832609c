"""TensorBoard as users read it: the event files of real runs read back with
TensorBoard's own reader (`EventAccumulator`), the HParams plugin's data parsed with its
own protobufs, and a folder of runs turned into one HParams table by TensorBoard's own
HParams backend (what `tensorboard --logdir FOLDER` shows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAMILY_TINY, invoke, sets

pytest.importorskip("tensorboard")  # the dev extra

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2  # noqa: E402

# Two evaluation periods of 2 steps (the conftest's FAMILY_TINY: programs other tests
# compile too); run "every1" logs the training loss at every step, run "every3" (the same
# seed, so the same steps) at step 3 only, the mean over the steps of its period up to
# it (3 alone: the period of steps 3 and 4 starts again). "every3" alone sets
# training.patience (null, so no HParams value, in "every1"): a key one run has.
RUNS = {
    "every1": [*FAMILY_TINY, "model.width=16", "training.log_every=1"],
    "every3": [*FAMILY_TINY, "model.width=16", "training.log_every=3", "training.patience=100"],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of finished runs (as a comparison's folder holds them): (folder, {name: summary})."""
    root = tmp_path_factory.mktemp("tb") / "study"
    summaries = {}
    for name, overrides in RUNS.items():
        result = invoke("train", "--run-dir", str(root / name), *sets(*overrides), "--json", check=True)
        summaries[name] = json.loads(result.stdout)
    return root, summaries


def _events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def _scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events.Scalars(tag)}


def test_training_loss_is_logged_every_log_every_steps_within_each_evaluation_period(folder):
    root, _ = folder
    every1 = _scalars(_events(root / "every1"), "train_step/loss")
    every3 = _scalars(_events(root / "every3"), "train_step/loss")
    assert sorted(every1) == [1, 2, 3, 4]
    assert every3 == {3: pytest.approx(every1[3], rel=1e-6)}  # not the mean of steps 1..3: that crosses an evaluation
    records = [json.loads(line) for line in (root / "every1" / "metrics.jsonl").read_text().splitlines()]
    for record, steps in zip(records, [(1, 2), (3, 4)], strict=True):  # a period's mean is metrics.jsonl's train/loss
        assert record["train/loss"] == pytest.approx(np.mean([every1[s] for s in steps]), rel=1e-6)


def test_test_metrics_and_the_best_monitored_value_are_logged_at_the_final_step(folder):
    root, summaries = folder
    summary = summaries["every1"]
    events = _events(root / "every1")
    for name in ("test/loss", "test/accuracy"):
        assert _scalars(events, name) == {4: pytest.approx(summary["metrics"][name], rel=1e-6)}
    assert _scalars(events, "best/val/accuracy") == {4: pytest.approx(summary["best_value"], rel=1e-6)}


def test_each_run_holds_its_hparams_session_with_its_flattened_config(folder):
    root, _ = folder
    content = _events(root / "every3").PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["training.log_every"].number_value == 3
    assert start.hparams["optimizer.learning_rate"].number_value == pytest.approx(1e-3)
    assert start.hparams["model.name"].string_value == "mlp"
    restore_best = start.hparams["training.restore_best"]
    assert restore_best.WhichOneof("kind") == "bool_value" and restore_best.bool_value is False
    assert "data.subset" not in start.hparams  # null: no value to show
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
    assert end.status == api_pb2.STATUS_SUCCESS
    assert "_hparams_/experiment" not in content  # left to TensorBoard, which joins every run's keys


def test_tensorboard_reads_a_folder_of_runs_as_one_hparams_table(folder):
    """TensorBoard's own HParams backend over the folder: one row per run, the union of
    the runs' config keys as columns (training.patience, which one run alone has, too),
    the test metrics as metric columns holding each run's summary values."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, list_session_groups

    root, summaries = folder
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    backend = backend_context.Context(base_plugin.TBContext(
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(root)), logdir=str(root)))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, include_metrics=True,
                                               allowed_statuses=[api_pb2.STATUS_SUCCESS])
    groups = list_session_groups.Handler(context.RequestContext(), backend, "", request).run().session_groups
    assert sorted(g.name for g in groups) == ["every1/tb", "every3/tb"]
    by_run = {g.name.split("/")[0]: g for g in groups}
    assert by_run["every1"].hparams["training.log_every"].number_value == 1
    assert by_run["every3"].hparams["training.log_every"].number_value == 3
    for name, group in by_run.items():
        metrics = {m.name.tag: m.value for m in group.metric_values}
        expected = {k: v for k, v in summaries[name]["metrics"].items() if k.startswith("test/") and k.count("/") == 1}
        assert expected and {k: metrics[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    experiment = backend.experiment_from_metadata(context.RequestContext(), "", True,
                                                  backend.hparams_metadata(context.RequestContext(), ""),
                                                  backend.hparams_from_data_provider(context.RequestContext(), "", None))
    columns = {h.name for h in experiment.hparam_infos}
    assert {"training.log_every", "model.width", "training.patience"} <= columns


def test_the_event_writer_starts_without_importing_an_installed_torch(tmp_path):
    """tensorboardX imports torch when it can; a `torch` on the path that fails on import
    shows whether the run's log still tries (it must not: 1.5 s of every start)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    script = ("import sys\n"
              "from dlcli.runlog import MetricsLog\n"
              f"log = MetricsLog({str(tmp_path / 'run')!r})\n"
              "log.write({'step': 1, 'epoch': 0, 'val/loss': 0.5})\n"
              "log.close()\n"
              "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
    assert any((tmp_path / "run" / "tb").iterdir())
