"""Datasets from the user's own files (`data.name: csv`, `npz`, `image_folder`): splits,
scaling, checksums in the run folder, one-line errors for bad files, and `dlcli eval` /
`dlcli predict` of such a run from its folder alone."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, invoke

TINY = ["training.steps=6", "training.eval_every=3", "training.batch_size=8", "model.width=8"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def iris_like(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of 3 features; the label names the largest feature."""
    x = np.random.default_rng(seed).normal(size=(n, 3)).round(4)
    return x, np.array(["a", "b", "c"])[x.argmax(axis=1)]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> dict:
    """A classifier trained on a CSV file named, relative to it, by a config in another folder."""
    import dlcli

    root = tmp_path_factory.mktemp("csv")
    x, y = iris_like()
    data = write_csv(root / "flowers.csv", ["f1", "f2", "f3", "species"], [[*r, label] for r, label in zip(x, y)])
    (root / "configs").mkdir()
    config = root / "configs" / "flowers.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "csv", "path": "../flowers.csv", "label": "species"}}))
    run = root / "run"
    summary = dlcli.train(config, run, overrides=TINY)
    return {"root": root, "data": data, "run": run, "summary": summary, "x": x, "y": y}


def test_a_csv_run_records_its_absolute_path_checksum_classes_and_statistics(csv_run):
    run, data = csv_run["run"], csv_run["data"]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(data)
    record = json.loads((run / "preprocessing.json").read_text())
    assert record["files"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    assert record["classes"] == ["a", "b", "c"] and record["features"] == ["f1", "f2", "f3"]
    assert record["input_shape"] == [3] and record["n_outputs"] == 3
    from dlcli.config import load_config

    train_x = load_config(None, ["data.name=csv", f"data.path={data}", "data.label=species",
                                 "data.normalize=none"]).data.load(Path(".")).train[0]
    assert record["scaling"]["mean"] == train_x.mean(axis=0).tolist()
    assert len(train_x) == 42  # 60 examples less 10% validation and 20% test


def test_eval_and_predict_of_a_csv_run_work_from_the_run_folder_and_agree_with_the_api(csv_run, tmp_path):
    import dlcli

    run = csv_run["run"]
    evaluated = json.loads(invoke("eval", str(run), "--json", cwd=tmp_path, check=True).stdout)
    assert evaluated["metrics"]["test/accuracy"] == csv_run["summary"]["metrics"]["test/accuracy"]
    # new rows: the columns by name, in another order, the label column ignored
    x = csv_run["x"][:4]
    new = write_csv(tmp_path / "new.csv", ["species", "f3", "f1", "f2"], [["?", r[2], r[0], r[1]] for r in x])
    table = list(csv.reader(io.StringIO(invoke("predict", str(run), str(new), cwd=tmp_path, check=True).stdout)))
    expected = dlcli.load_run(run).predict(x)
    assert table[0] == ["input", "predicted", "p_a", "p_b", "p_c"]
    assert [row[1] for row in table[1:]] == expected.labels
    assert [[float(v) for v in row[2:]] for row in table[1:]] == expected.probabilities.astype(float).tolist()


def test_eval_refuses_a_data_file_changed_since_training(csv_run, tmp_path):
    import shutil

    run = Path(shutil.copytree(csv_run["run"], tmp_path / "run"))
    data = Path(shutil.copy(csv_run["data"], tmp_path / "flowers.csv"))
    for name in ("config.yaml", "preprocessing.json"):  # the copied run reads the copied file
        (run / name).write_text((run / name).read_text().replace(str(csv_run["data"]), str(data)))
    with open(data, "a") as f:
        f.write("0.1,0.2,0.3,a\n")
    result = invoke("eval", str(run))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"data file {data} has changed (sha256" in result.stderr and "since the run trained" in result.stderr


def test_an_npz_regression_run_predicts_values(tmp_path):
    import dlcli

    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0
    np.savez(tmp_path / "points.npz", inputs=x, targets=y)
    summary = dlcli.train(None, tmp_path / "run", overrides=[
        "data.name=npz", f"data.path={tmp_path / 'points.npz'}", "data.task=regression", "data.x_key=inputs",
        "data.y_key=targets", "data.normalize=per_feature", *TINY])
    assert summary["dataset"] == "npz" and "test/mae" in summary["metrics"]
    np.savez(tmp_path / "new.npz", inputs=x[:3])
    predictions = dlcli.load_run(tmp_path / "run").predict(tmp_path / "new.npz")
    assert predictions.kind == "regression" and predictions.predicted.shape == (3, 1)
    table = list(csv.reader(io.StringIO(invoke("predict", str(tmp_path / "run"), str(tmp_path / "new.npz"),
                                               check=True).stdout)))
    assert table[0] == ["input", "value"]
    assert [float(row[1]) for row in table[1:]] == predictions.predicted[:, 0].astype(float).tolist()


def load(*overrides: str):
    """The splits of a data section given by overrides (no training)."""
    from dlcli.config import load_config

    return load_config(None, list(overrides)).data.load(Path("."))


def test_npz_and_csv_files_may_give_their_own_splits(tmp_path):
    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
    np.savez(tmp_path / "own.npz", x_train=x[:12], y_train=y[:12], x_val=x[12:15], y_val=y[12:15], x_test=x[15:],
             y_test=y[15:])
    splits = load("data.name=npz", f"data.path={tmp_path / 'own.npz'}", "data.normalize=none")
    assert [len(part[0]) for part in (splits.train, splits.val, splits.test)] == [12, 3, 5]
    np.testing.assert_array_equal(splits.test[0], x[15:])
    parts = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    write_csv(tmp_path / "own.csv", ["u", "label", "part"], [[i, i % 2, p] for i, p in enumerate(parts)])
    splits = load("data.name=csv", f"data.path={tmp_path / 'own.csv'}", "data.label=label", "data.split_column=part",
                  "data.normalize=none")
    assert splits.val[0][:, 0].tolist() == [6.0, 7.0] and splits.preprocessing["features"] == ["u"]


def test_an_image_folder_gives_pixels_classes_and_checksums(tmp_path):
    folder = tmp_path / "shapes"
    for label, value in [("dark", 10), ("light", 240)]:
        (folder / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((6, 4), value + i, np.uint8)).save(folder / label / f"{i}.png")
    splits = load("data.name=image_folder", f"data.path={folder}", "data.normalize=unit", "model.name=mlp",
                  "data.val_fraction=0.2", "data.test_fraction=0.2")
    assert splits.info.input_shape == (6, 4, 1) and splits.info.n_outputs == 2
    assert splits.preprocessing["classes"] == ["dark", "light"] and splits.preprocessing["inputs"] == "pixels"
    assert len(splits.preprocessing["files"]) == 10
    x, y = splits.train
    assert np.all(x[y == 0] < 0.1) and np.all(x[y == 1] > 0.9)  # 8-bit values divided by 255


def bad(tmp_path: Path, case: str) -> list[str]:
    """Write the bad file of `case`; return the --set overrides that read it."""
    csv_file = tmp_path / "t.csv"
    csv_sets = ["data.name=csv", f"data.path={csv_file}", "data.label=y"]
    if case == "missing":
        return ["data.name=npz", f"data.path={tmp_path / 'nothing.npz'}"]
    if case == "no_header":
        write_csv(csv_file, ["1", "2"], [[3, 4]])
    elif case == "not_a_number":
        write_csv(csv_file, ["a", "y"], [[1, 0], ["x1", 1]])
    elif case == "short_row":
        write_csv(csv_file, ["a", "b", "y"], [[1, 2, 0], [1, 1]])
    elif case == "too_few":
        write_csv(csv_file, ["a", "y"], [[1, 0], [2, 1], [3, 0]])
    elif case == "lengths":
        np.savez(tmp_path / "t.npz", x=np.zeros((5, 2)), y=np.zeros(4))
        return ["data.name=npz", f"data.path={tmp_path / 't.npz'}"]
    elif case in ("unreadable", "mixed"):
        for label in ("a", "b"):
            (tmp_path / "imgs" / label).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "imgs" / label / "0.png")
        if case == "unreadable":
            (tmp_path / "imgs" / "b" / "1.png").write_bytes(b"not a png")
        else:
            Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "imgs" / "b" / "1.png")
        return ["data.name=image_folder", f"data.path={tmp_path / 'imgs'}"]
    return csv_sets


@pytest.mark.parametrize("case, expected", [
    ("missing", "nothing.npz does not exist"),
    ("no_header", "has no header row"),
    ("not_a_number", "row 3, column 'a': 'x1' is not a number"),
    ("short_row", "row 3 has 2 cells but the header has 3"),
    ("too_few", "has 3 examples, too few for a 0.1 validation and 0.2 test fraction"),
    ("lengths", "inputs of shape (5, 2) and labels of shape (4,) do not match"),
    ("unreadable", "1.png is not a readable image"),
    ("mixed", "mixed image sizes"),
])
def test_bad_files_are_one_line_and_exit_2(tmp_path, case, expected):
    overrides = bad(tmp_path, case)
    result = invoke("train", "--run-dir", str(tmp_path / "run"), *[p for o in overrides for p in ("--set", o)])
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_config_show_of_a_csv_experiment_imports_no_jax_and_needs_no_file(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("data: {name: csv, path: absent.csv, label: y}\n")
    script = ("import sys\nfrom dlcli.cli import run\ncode = run(['config', 'show', sys.argv[1]])\n"
              "print(code, 'jax' in sys.modules, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, cwd=REPO)
    assert result.stderr.split()[-2:] == ["0", "False"], result.stderr
    assert f"path: {tmp_path / 'absent.csv'}" in result.stdout
