"""Data parallelism on several CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`
in a subprocess): every family trains to the same figures on 1 and 4 devices, the MLP,
the CNN and the GAN also on 2, with the state replicated or split (FSDP), and a run
resumes on another number of devices. (Each placement compiles the family's programs
again, and no family's code branches on the number of devices: 2 devices for every
family would add time, not code paths; the LSTM's, the decoder's and the autoencoder's
2-device runs were dropped for that.)

The tolerance: the devices' partial gradients and metric sums are added in another
order than one device adds them, and float32 addition is not associative. Over the
four steps of these runs the figures measured 3.4e-7 apart at most (relative, AMD
EPYC); 1e-5 allows 30 times that for other CPUs and summation trees while still failing
on any real difference (a batch seen twice or a gradient not averaged moves the losses
by more than 1e-3). The DCGAN is the exception: its generator's and discriminator's
gradient norms and the Fréchet distance of its samples (a matrix square root of feature
covariances, which amplifies small differences) measured up to 7.6e-5 apart on 2 and 4
devices, the same on both; it gets 3e-4.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import FAMILIES, FAMILY_TINY, REPO, SHARED_DATA, cli_env, family_config, run_cli, sets

pytestmark = pytest.mark.e2e  # each test starts processes with 4 CPU devices

RELATIVE = 1e-5
RELATIVE_FOR = {"dcgan": 3e-4}
PLACEMENTS = {  # family: the placements each trains on
    "mlp": "1,2,4,4+fsdp", "cnn": "1,2,4", "rnn": "1,4", "lstm": "1,4", "gru": "1,4", "transformer_encoder": "1,4",
    "transformer_decoder": "1,4", "transformer_seq2seq": "1,4", "vit": "1,4+fsdp", "autoencoder": "1,4",
    "denoising_autoencoder": "1,4", "sparse_autoencoder": "1,4", "vae": "1,4", "gan": "1,2,4", "dcgan": "1,4",
}


def device_env(devices: int) -> dict:
    env = cli_env()
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return env


def placements(experiment: str, overrides: list[str], which: str) -> dict:
    """tests/parallel_runs.py in a process with 4 CPU devices: {placement: result}."""
    config = str(REPO / "experiments" / f"{experiment}.yaml") if experiment else ""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "parallel_runs.py"), config, str(SHARED_DATA), which,
                             *FAMILY_TINY, *overrides], capture_output=True, text=True, env=device_env(4), cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def assert_close(a, b, where: str = "", relative: float = RELATIVE) -> None:
    """Every number of `a` within `relative` of `b` (NaN equals NaN); the same keys and lengths."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if key not in ("wall_s", "samples_per_s", "compile_s", "run_dir", "parallel", "device"):
                assert_close(a[key], b[key], f"{where}.{key}", relative)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]", relative)
    elif isinstance(a, float) and not (math.isnan(a) and math.isnan(b)):
        assert b == pytest.approx(a, rel=relative, abs=1e-7), where
    else:
        assert a == b, where


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_alike_on_one_and_several_devices(family, request):
    experiment, overrides = family_config(family, request)
    results = placements(experiment, overrides, PLACEMENTS[family])
    one = results["1"]
    for placement, result in results.items():
        data, _, fsdp = placement.partition("+")
        assert result["summary"]["parallel"] == {"processes": 1, "devices": int(data), "platform": "cpu",
                                                 "device_kind": "cpu", "fsdp": fsdp == "fsdp"}
        relative = RELATIVE_FOR.get(family, RELATIVE)
        assert_close(one["records"], result["records"], f"{placement} metrics.jsonl", relative)
        assert_close(one["summary"], result["summary"], f"{placement} summary", relative)


def test_a_run_resumes_and_evaluates_on_another_number_of_devices():
    """Saved split over 4 devices (FSDP) and resumed on 1, saved on 1 and resumed on 2:
    the uninterrupted run's figures; `dlcli eval` (every device: 4) measures the same."""
    results = placements("", ["model.width=16"], "1,4+fsdp>1,1>2")
    whole = results["1"]
    for placement in ("4+fsdp>1", "1>2"):
        resumed = results[placement]
        assert_close(whole["records"], resumed["records"], f"{placement} metrics.jsonl")
        assert_close(whole["summary"]["metrics"], resumed["summary"]["metrics"], placement)
        assert resumed["summary"]["parallel"]["devices"] == int(placement[-1])
        test = {k: v for k, v in whole["summary"]["metrics"].items() if k.startswith("test/")}
        assert_close(test, resumed["eval"], f"{placement} eval")


@pytest.mark.parametrize("overrides,message", [
    (["parallel.data=3", "training.batch_size=32"], "training.batch_size 32 does not divide by parallel.data 3"),
    (["parallel.data=8"], "parallel.data is 8 but only 4 cpu device(s) are visible"),
    (["training.batch_size=30"], "training.batch_size 30 does not divide by the 4 devices of the data axis"),
    (["parallel.data=0"], "parallel.data must be >= 1"),
    (["parallel.data=all"], "parallel.data must be an integer or one of auto"),
])
def test_bad_parallel_settings_are_one_line(tmp_path, overrides, message):
    result = run_cli("train", "--run-dir", str(tmp_path / "run"), *sets(*overrides), env=device_env(4))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run").exists()
