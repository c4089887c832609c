"""`dlcli predict` and the Python API (`dlcli.load_run`, `dlcli.train`) on one tiny
trained digits MLP: inputs prepared as in training, the API and the CLI agree, and the
API's accuracy on the test split is `dlcli eval`'s."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SHARED_DATA, invoke

TINY_DIGITS = ["training.steps=20", "training.eval_every=10", "training.batch_size=32", "model.width=16"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, dict]:
    """(run folder, summary) of a tiny digits MLP trained through `dlcli.train`."""
    import dlcli

    run = tmp_path_factory.mktemp("predict") / "run"
    summary = dlcli.train(None, run, overrides=TINY_DIGITS, data_dir=SHARED_DATA)
    return run, summary


@pytest.fixture(scope="module")
def raw_test_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split before dlcli's scaling: pixel values in [0, 1] and labels."""
    from dlcli.config import load_config

    return load_config(None, ["data.normalize=unit"]).data.load(SHARED_DATA).test


def predict_csv(*args: str) -> tuple[list[str], list[list[str]]]:
    result = invoke("predict", *args, check=True)
    table = list(csv.reader(io.StringIO(result.stdout)))
    return table[0], table[1:]


def test_preprocessing_json_holds_the_training_splits_statistics(digits_run):
    from dlcli.config import load_config

    run, _ = digits_run
    record = json.loads((run / "preprocessing.json").read_text())
    train_x = load_config(None, ["data.normalize=unit"]).data.load(SHARED_DATA).train[0]
    assert record["input_shape"] == [8, 8, 1] and record["n_outputs"] == 10 and record["inputs"] == "pixels"
    assert record["scaling"] == {"normalize": "standard", "mean": float(train_x.mean()), "std": float(train_x.std())}


def test_load_run_predicts_the_test_split_as_dlcli_eval_measures_it(digits_run, raw_test_split):
    import dlcli
    from dlcli.models import count_params

    run, summary = digits_run
    x, y = raw_test_split
    trained = dlcli.load_run(run)
    predictions = trained.predict(x)
    evaluated = json.loads(invoke("eval", str(run), "--json", check=True).stdout)
    accuracy = float((predictions.predicted == y).mean())
    assert accuracy == evaluated["metrics"]["test/accuracy"] == summary["metrics"]["test/accuracy"]
    assert trained.config.model.width == 16 and trained.step == summary["evaluated_checkpoint"]
    assert count_params(trained.model) == summary["params"]
    np.testing.assert_allclose(predictions.probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_cli_prints_what_the_api_predicts_for_arrays_and_images(digits_run, raw_test_split, tmp_path):
    import dlcli

    run, _ = digits_run
    x, _ = raw_test_split
    np.save(tmp_path / "five.npy", x[:5])
    expected = dlcli.load_run(run).predict(x[:5])
    header, rows = predict_csv(str(run), str(tmp_path / "five.npy"))
    assert header == ["input", "predicted", *(f"p_{k}" for k in range(10))]
    assert [row[1] for row in rows] == expected.labels
    assert np.array([[float(v) for v in row[2:]] for row in rows]).tolist() == expected.probabilities.astype(float).tolist()

    pixels = np.round(x[0, ..., 0] * 255).astype(np.uint8)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(pixels).save(images / "a.png")
    # twice the size, stored as RGB: averaged down in 2x2 blocks and made grey again, unambiguously
    Image.fromarray(pixels).resize((16, 16), Image.NEAREST).convert("RGB").save(images / "b.png")
    from_array = dlcli.load_run(run).predict(pixels[..., None])
    _, rows = predict_csv(str(run), str(images), "--checkpoint", "latest")
    assert [row[0] for row in rows] == ["a.png", "b.png"]
    assert rows[0][1:] == rows[1][1:]  # one batch
    assert rows[0][1] == from_array.labels[0]  # a batch of another size: equal up to float rounding
    np.testing.assert_allclose([float(v) for v in rows[0][2:]], from_array.probabilities[0], rtol=1e-5)

    invoke("predict", str(run), str(images / "a.png"), "--json", "--out", str(tmp_path / "out.json"), check=True)
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["kind"] == "classification" and written["predictions"][0]["input"] == "a.png"
    assert written["predictions"][0]["predicted"] == from_array.labels[0]


@pytest.mark.parametrize("case, expected", [
    ("wrong_shape", "has shape (3, 7, 7) but the model takes (N, 8, 8, 1) or one example (8, 8, 1)"),
    ("out_of_range", "holds values from 0 to 16, but the model takes pixel values in [0, 1]"),
    ("colour", "is a colour image but the model takes grey images (8x8, 1 channel)"),
    ("odd_size", "is 12x12 pixels but the model takes 8x8 (or a whole multiple of it)"),
    ("text", "is not an image"),
    ("missing", "does not exist"),
])
def test_bad_inputs_are_one_line_and_exit_2(digits_run, tmp_path, case, expected):
    run, _ = digits_run
    path = {"wrong_shape": "x.npy", "out_of_range": "x.npy", "colour": "x.png", "odd_size": "x.png",
            "text": "x.txt", "missing": "nothing.npy"}[case]
    target = tmp_path / path
    if case == "wrong_shape":
        np.save(target, np.zeros((3, 7, 7), np.float32))
    elif case == "out_of_range":
        np.save(target, np.arange(64 * 2).reshape(2, 8, 8, 1) % 17.0)
    elif case == "colour":
        Image.fromarray(np.stack([np.zeros((8, 8)), np.full((8, 8), 255), np.zeros((8, 8))], -1).astype(np.uint8)).save(target)
    elif case == "odd_size":
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(target)
    elif case == "text":
        target.write_text("1 2 3")
    result = invoke("predict", str(run), str(target))
    assert result.returncode == 2 and result.stdout == ""
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_run_folder_without_preprocessing_json_says_so(digits_run, tmp_path):
    run, _ = digits_run
    old = Path(shutil.copytree(run, tmp_path / "old"))
    (old / "preprocessing.json").unlink()
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    result = invoke("predict", str(old), str(tmp_path / "x.npy"))
    assert result.returncode == 2
    assert "has no preprocessing.json" in result.stderr and "retrain it with --overwrite" in result.stderr


def test_import_dlcli_imports_no_jax_until_the_api_is_used():
    script = ("import sys, dlcli\n"
              "print('jax' in sys.modules, dlcli.train.__module__, dlcli.load_run.__module__, 'jax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.split() == ["False", "dlcli.api", "dlcli.api", "True"], result.stderr


def test_a_language_model_predicts_the_next_character_that_greedy_sampling_takes(tmp_path):
    import dlcli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 20, encoding="utf-8")
    run = tmp_path / "lm"
    dlcli.train(None, run, overrides=["model.name=rnn", "model.hidden=8", "data.name=text", f"data.path={corpus}",
                                      "data.seq_length=8", "training.steps=4", "training.eval_every=4",
                                      "training.batch_size=8"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the ca\non the m\n", encoding="utf-8")
    result = json.loads(invoke("predict", str(run), str(prompts), "--json", check=True).stdout)
    assert result["kind"] == "next_character" and result["classes"] == sorted(set(corpus.read_text()))
    assert [p["input"] for p in result["predictions"]] == ["the ca", "on the m"]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in result["predictions"])
    greedy = json.loads(invoke("sample", str(run), "--prompt", "on the m", "--length", "1", "--temperature", "0",
                               "--json", check=True).stdout)
    assert result["predictions"][1]["predicted"] == greedy["text"]
    (tmp_path / "x.npy").write_bytes(b"")
    bad = invoke("predict", str(run), str(tmp_path / "x.npy"))
    assert bad.returncode == 2 and "is a language model: give a UTF-8 .txt file" in bad.stderr
