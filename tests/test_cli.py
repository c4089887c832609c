"""The CLI: train, eval, --json, config precedence and the listing commands run in
this process (`invoke`); the console script and `python -m dlcli`, and resuming after a
real SIGKILL, in real processes."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import yaml

from conftest import REPO, cli_env, invoke, run_cli, sets, timeless_metrics, train_json

from dlcli.checkpoint import RunCheckpoints
from dlcli.config import DATASETS, load_config
from dlcli.training.experiment import build_experiment


def test_train_then_eval_json(tmp_path):
    summary = train_json("--run-dir", str(tmp_path / "run"), *sets("training.steps=20", "training.eval_every=10"))
    assert summary["run_dir"] == str(tmp_path / "run")
    assert summary["params"] == load_config(None).model.param_count(load_config(None).info)
    assert {"test/accuracy", "test/loss", "val/accuracy", "val/loss"} <= set(summary["metrics"])
    assert 0.0 <= summary["metrics"]["test/accuracy"] <= 1.0 and summary["wall_s"] > 0
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert (tmp_path / "run" / name).is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    scalars = _tensorboard_scalars(tmp_path / "run" / "tb")
    assert scalars[("val/accuracy", 20)] == pytest.approx(records[1]["val/accuracy"])
    assert scalars[("train/loss", 10)] == pytest.approx(records[0]["train/loss"])
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "grad_norm", "samples_per_s"} <= set(records[0])

    evaluated = json.loads(invoke("eval", str(tmp_path / "run"), "--json", check=True).stdout)
    assert evaluated["checkpoint"] == summary["best_step"]
    assert evaluated["metrics"]["test/accuracy"] == summary["metrics"]["test/accuracy"]
    table = invoke("eval", str(tmp_path / "run"), "--split", "val", check=True).stdout
    assert "val/accuracy" in table and "confusion matrix" in table


def test_train_prints_summary_table_and_progress(tmp_path):
    result = invoke("train", "--run-dir", str(tmp_path / "run"), *sets("training.steps=6", "training.eval_every=3"), check=True)
    assert "run summary: mlp_digits" in result.stdout and "test/accuracy" in result.stdout
    assert "compile time" in result.stdout and "parameters" in result.stdout
    assert "step 6/6" in result.stderr and "val/accuracy" in result.stderr


def test_config_show_precedence(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"training": {"epochs": 3, "batch_size": 64}, "model": {"width": 32}}))
    shown = yaml.safe_load(invoke("config", "show", str(config), *sets("training.epochs=9"), check=True).stdout)
    assert shown["training"]["epochs"] == 9  # --set beats the file
    assert shown["training"]["batch_size"] == 64  # the file beats the defaults
    assert shown["training"]["eval_batch_size"] == load_config(None).training.eval_batch_size  # defaults fill the rest
    assert shown["name"] == "exp" and shown["model"]["width"] == 32
    as_json = json.loads(invoke("config", "show", str(config), *sets("training.epochs=9"), "--json", check=True).stdout)
    assert as_json == shown


def test_listing_commands():
    models = invoke("models", check=True).stdout
    assert "mlp" in models and "cnn" in models
    listed = {m["name"]: m["params"] for m in json.loads(invoke("models", "--json", check=True).stdout)}
    mnist = load_config(None, ["data.name=mnist"]).info
    adding = DATASETS.get("adding")().info()
    assert listed == {"mlp": load_config(None).model.param_count(mnist),
                      "cnn": load_config(None, ["model.name=cnn"]).model.param_count(mnist),
                      **{name: load_config(None, [f"model.name={name}", "data.name=adding"]).model.param_count(adding)
                         for name in ("rnn", "lstm", "gru")},
                      **{name: load_config(None, [f"model.name={name}", f"data.name={dataset}"])
                         .model.param_count(DATASETS.get(dataset)().info())
                         for name, dataset in [("transformer_decoder", "copy_memory"), ("vit", "digits"),
                                               ("transformer_encoder", "associative_recall"),
                                               ("transformer_seq2seq", "reverse")]},
                      **{name: load_config(None, [f"model.name={name}", "data.name=mnist", "data.normalize=unit"])
                         .model.param_count(mnist)
                         for name in ("autoencoder", "denoising_autoencoder", "sparse_autoencoder", "vae")},
                      "encoder_classifier": None,  # its size is that of the autoencoder run it starts from
                      "gan": load_config(None, ["model.name=gan", "data.name=ring8"]).model.param_count(
                          DATASETS.get("ring8")().info())}
    datasets = {d["name"]: d for d in json.loads(invoke("datasets", "--json", check=True).stdout)}
    assert set(datasets) == set(DATASETS.names()) >= {"digits", "mnist", "fashion_mnist", "moons", "spirals",
                                                       "regression1d", "sawtooth", "parity", "adding", "copy_memory",
                                                       "forecast", "varlen_parity", "text", "associative_recall",
                                                       "reverse", "sort", "addition"}
    assert datasets["mnist"]["input_shape"] == [28, 28, 1] and datasets["regression1d"]["task"] == "regression"
    assert "fashion_mnist" in invoke("datasets", check=True).stdout
    assert "train" in invoke("--help", check=True).stdout


@pytest.mark.e2e
def test_python_dash_m_and_console_script_agree():
    script = REPO / ".venv" / "bin" / "dlcli"
    via_module = run_cli("config", "show", check=True).stdout
    via_script = subprocess.run([sys.executable, "-c", "from dlcli.cli import main; main()", "config", "show"],
                                capture_output=True, text=True, env=cli_env(), check=True).stdout
    assert via_module == via_script
    if script.exists():
        assert subprocess.run([str(script), "config", "show"], capture_output=True, text=True, check=True).stdout == via_module


RESUME = ("training.steps=400", "training.eval_every=100", "training.steps_per_dispatch=10", "training.batch_size=32",
          "model.dropout=0.2", "training.restore_best=false", "schedule.name=warmup_cosine", "schedule.warmup_steps=100",
          "checkpoint.min_interval_s=0")
RESUME_GAN = ("model.name=gan", "data.name=ring8", "data.n_train=2048", "data.n_val=256", "data.n_test=256",
              "model.generator=[32,32]", "model.discriminator=[32,32]", "model.latent=2", "model.loss=wgan_gp",
              "model.n_critic=2", "model.ema=0.9", "training.steps=400", "training.eval_every=100",
              "training.steps_per_dispatch=10", "training.batch_size=32", "training.restore_best=false",
              "schedule.name=warmup_cosine", "checkpoint.min_interval_s=0")


@pytest.mark.e2e
@pytest.mark.parametrize("overrides", [RESUME, RESUME_GAN], ids=["mlp", "gan"])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, overrides):
    """A real SIGKILL at whatever point the run has reached, then --resume: the same
    metrics, metrics.jsonl and final state as the uninterrupted run. One optimizer (MLP)
    and two (a GAN with EMA); the other families resume from a checkpoint the same way,
    tested in process by `assert_resumes_evaluates_and_reproduces`."""
    total = load_config(None, list(overrides)).training.steps
    # fresh processes throughout: a run that continued in the long-lived test process could
    # differ from one in a fresh process in the last bits (measured: 1e-8 relative)
    reference = train_json("--run-dir", str(tmp_path / "whole"), *sets(*overrides), process=True)

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "dlcli", "train", "--run-dir", str(killed_dir), *sets(*overrides)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env(), cwd=REPO)
    deadline = time.monotonic() + 120
    while not _finished_steps(killed_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "summary.json").exists(), "the run finished before it could be killed"
    killed_at = max(_finished_steps(killed_dir))
    assert 0 < killed_at < total

    resumed = train_json("--run-dir", str(killed_dir), "--resume", *sets(*overrides), process=True)
    assert resumed["metrics"] == reference["metrics"]
    assert timeless_metrics(killed_dir) == timeless_metrics(tmp_path / "whole")
    np.testing.assert_equal(_latest_state(killed_dir, overrides), _latest_state(tmp_path / "whole", overrides))


def _tensorboard_scalars(folder) -> dict[tuple[str, int], float]:
    """{(tag, step): value} read back from the TFRecord event files in `folder`."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset: offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 16 + length  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def _finished_steps(run_dir) -> list[int]:
    folder = run_dir / "checkpoints"
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []


def _latest_state(run_dir, overrides) -> dict:
    cfg = load_config(None, list(overrides))
    checkpoints = RunCheckpoints(run_dir, keep=cfg.checkpoint.keep, read_only=True)
    try:
        state, _ = checkpoints.restore(checkpoints.latest_step(), build_experiment(cfg, REPO).checkpoint_items())
    finally:
        checkpoints.close()
    return jax.tree.map(np.asarray, state)


def test_json_output_is_strict_even_for_diverged_metrics(capsys):
    from dlcli.cli.options import print_json

    print_json({"metrics": {"val/loss": float("nan"), "val/accuracy": 0.5}, "values": [float("inf"), 1.0]})
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "metrics": {"val/loss": None, "val/accuracy": 0.5}, "values": [None, 1.0]}
