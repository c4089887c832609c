"""Backend-aware choices: `conv_impl: auto`, how a run computes left free on resume,
`--platform`, and worker processes that each get a GPU of their own."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from flax import nnx

from conftest import SHARED_DATA, cli_env, run_cli, sets
from dlcli.batch import Job, JobPool, worker_env
from dlcli.config import load_config
from dlcli.models.layers import conv_impl, im2col_conv
from dlcli.training.loop import fit
from test_sweep import _children

CNN = ["model.name=cnn", "model.blocks=[{channels: 4}]", "model.dense=[16]", "training.batch_size=8",
       "training.eval_batch_size=64", "training.steps=8", "training.eval_every=4", "training.restore_best=false",
       "checkpoint.min_interval_s=0"]


def test_conv_impl_auto_is_im2col_on_a_cpu():
    cfg = load_config(None, CNN)
    assert cfg.model.conv_impl == "auto" and conv_impl("auto") == "im2col" and conv_impl("xla") == "xla"
    model = cfg.model.build(cfg.info, nnx.Rngs(params=0))
    assert model.convs[0].conv_general_dilated is im2col_conv


def test_a_run_resumes_with_another_convolution_and_chunk_length(tmp_path):
    """`model.conv_impl` and `training.steps_per_dispatch` say how a run computes, not
    what: a run trained with one resumes with the other (as on another backend) to the
    same figures, up to the summation order of the two convolutions."""
    whole = fit(load_config(None, [*CNN, "model.conv_impl=im2col"]), tmp_path / "whole", data_dir=SHARED_DATA,
                show_progress=False)
    fit(load_config(None, [*CNN, "model.conv_impl=im2col"]), tmp_path / "cut", data_dir=SHARED_DATA,
        show_progress=False)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "8")
    resumed = fit(load_config(None, [*CNN, "model.conv_impl=xla", "training.steps_per_dispatch=1"]), tmp_path / "cut",
                  data_dir=SHARED_DATA, resume=True, show_progress=False)
    assert resumed["steps"] == 8
    assert resumed["metrics"] == pytest.approx(whole["metrics"], rel=1e-4)


def test_platform_picks_the_backend_or_says_in_one_line_that_it_is_missing(tmp_path):
    result = run_cli("--platform", "cpu", "train", "--run-dir", str(tmp_path / "cpu"), *sets(*CNN), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["parallel"]["platform"] == "cpu"
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU: the missing-platform case needs one without")
    result = run_cli("train", "--run-dir", str(tmp_path / "gpu"), *sets(*CNN), env=cli_env(DLCLI_PLATFORM="gpu"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: JAX cannot start the 'gpu' platform here") and "--platform" in lines[0]
    assert not (tmp_path / "gpu").exists()


def test_each_worker_gets_a_gpu_of_its_own_and_its_share_of_memory(tmp_path, monkeypatch):
    """With two GPUs listed, two workers of a batch hold one each (their environment,
    read from /proc while they live); four workers would share each GPU by two."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)  # no CUDA here: JAX falls back to the CPU
    assert worker_env(4, SHARED_DATA, ["3", "5"])["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.450"
    config = load_config(None, [*CNN, "training.steps=2", "training.eval_every=2"]).to_dict()
    jobs = [Job(f"job-{i}", {**config, "seed": i}, tmp_path / f"job-{i}") for i in range(2)]
    with JobPool(workers=2, data_dir=SHARED_DATA) as pool:
        results = pool.run(jobs)
        environments = [dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
                        for pid in _children(os.getpid())
                        if "dlcli.worker" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert [r.status for r in results] == ["done", "done"]
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in environments) == ["3", "5"]
    assert {env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for env in environments} == {"0.900"}
    assert {env["XLA_PYTHON_CLIENT_PREALLOCATE"] for env in environments} == {"false"}


def test_compiled_programs_are_kept_in_the_user_cache_and_reused(tmp_path):
    """A second run of the same shapes compiles nothing new (every program it needs is
    in `<XDG_CACHE_HOME>/dlcli/xla` already) and computes the same figures;
    DLCLI_COMPILE_CACHE=0 keeps nothing."""
    env = {k: v for k, v in cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")).items()
           if not k.startswith("JAX_COMPILATION_CACHE")}  # the suite's own shared cache, not the user's
    cache = tmp_path / "cache" / "dlcli" / "xla"
    runs = []
    for attempt in range(2):
        result = run_cli("train", "--run-dir", str(tmp_path / f"run{attempt}"), *sets(*CNN), "--json", env=env)
        assert result.returncode == 0, result.stderr
        runs.append((json.loads(result.stdout)["metrics"], sorted(p.name for p in cache.iterdir())))
    (cold_metrics, cold_entries), (warm_metrics, warm_entries) = runs
    assert any(name.startswith("jit__train_chunk_fn") for name in cold_entries)
    assert warm_entries == cold_entries and warm_metrics == cold_metrics
    off = run_cli("train", "--run-dir", str(tmp_path / "off"), *sets(*CNN), "--json",
                  env={**env, "DLCLI_COMPILE_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path / "other")})
    assert off.returncode == 0 and not (tmp_path / "other" / "dlcli" / "xla").exists()
