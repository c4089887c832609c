"""The package's shape: imports follow the documented layers, config parsing is pure,
and run folders of the earlier checkpoint layout stay usable."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dlcli
from conftest import REPO

PACKAGE = REPO / "dlcli"
FIXTURES = Path(__file__).parent / "fixtures"

# Lowest first; the same order as the diagram in dlcli/__init__.py.
LAYERS = [
    {"errors", "registry", "schema", "console", "plots", "stats", "runlog", "allocator", "files", "interrupts", "report"},
    {"data", "checkpoint"},
    {"models"},
    {"specs"},
    {"config"},
    {"runs", "optim"},
    {"tasks"},
    {"training", "generate", "predict", "api"},
    {"batch", "compare", "sweep", "sweep_optuna"},
    {"cli", "__main__", "worker"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """'dlcli.models.gan' -> 'models' (a top-level module or package of dlcli)."""
    return module.split(".")[1]


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every dlcli import in a file, at any depth, except those under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                 for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dlcli."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "dlcli":
            found += [(node.lineno, f"dlcli.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("dlcli.")]
    return found


def test_every_import_goes_down_the_documented_layers():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert units == set(LEVEL), f"modules missing from the layer table: {units ^ set(LEVEL)}"
    against = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if parts == ("__init__.py",):
            continue
        here = Path(parts[0]).stem
        for line, module in _runtime_imports(path):
            if LEVEL[_unit(module)] > LEVEL[here]:
                against.append(f"{path.relative_to(REPO)}:{line} imports {module} ({here} is below {_unit(module)})")
    assert against == []


def _documented_layers() -> list[set[str]]:
    """The layer diagram of dlcli/__init__.py, lowest first: each line's names before
    its description (a line indented further continues the one above)."""
    layers = []
    for line in dlcli.__doc__.splitlines():
        if not line.startswith("    "):
            continue
        names = {n.strip() for n in re.split(r"\s{2,}", line.strip())[0].split(",") if n.strip()}
        if line.startswith("      "):
            layers[-1] |= names
        else:
            layers.append(names)
    return layers[::-1]


def test_the_layer_table_is_the_documented_one():
    assert _documented_layers() == LAYERS


@pytest.mark.e2e
def test_every_shipped_config_loads_without_jax_and_without_the_runs_it_references(tmp_path):
    """finetune_ae_mnist, scratch_encoder_mnist and dcgan_mnist name run folders (relative
    paths, absent from this empty working folder); loading every shipped file, and
    `dlcli config show` of those three, neither opens them nor imports JAX or Flax."""
    script = ("import glob, sys\nfrom dlcli.config import load_config\n"
              f"names = [load_config(p).name for p in sorted(glob.glob({str(REPO / 'experiments' / '*.yaml')!r}))]\n"
              "print(len(names), 'jax' in sys.modules, 'flax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    count, jax_loaded, flax_loaded = result.stdout.split()
    assert int(count) == len(list((REPO / "experiments").glob("*.yaml")))
    assert (jax_loaded, flax_loaded) == ("False", "False")
    for name, field in [("finetune_ae_mnist", "autoencoder_run"), ("scratch_encoder_mnist", "autoencoder_run"),
                        ("dcgan_mnist", "classifier_run")]:
        shown = subprocess.run([sys.executable, "-m", "dlcli", "config", "show", str(REPO / "experiments" / f"{name}.yaml")],
                               capture_output=True, text=True, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert f"name: {name}" in shown.stdout and f"{field}: runs/" in shown.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_of_the_earlier_checkpoint_layout_evaluates_and_resumes(tmp_path):
    """tests/fixtures/legacy_run_mlp_digits was written by dlcli before checkpoints held
    separate model and optimizer items (one `state` item; a 12-layer MLP, so list
    indices past 9 test the restored key order). `eval` reads it, and a copy cut back to
    its first checkpoint resumes to the same end, saving the new layout from there on.
    Equal to 1e-6, not bitwise: the fixture was computed on another CPU."""
    from dlcli.runs import RunDir
    from dlcli.training.evaluate import evaluate_run
    from dlcli.training.loop import fit

    run = shutil.copytree(FIXTURES / "legacy_run_mlp_digits", tmp_path / "run")
    saved = json.loads((run / "summary.json").read_text())
    assert sorted(p.name for p in (run / "checkpoints" / "4").iterdir() if p.is_dir()) == ["meta", "state"]
    evaluated = evaluate_run(run, checkpoint="best", split="test", data_dir=tmp_path)
    assert evaluated["checkpoint"] == saved["evaluated_checkpoint"]
    assert evaluated["metrics"] == pytest.approx({k: saved["metrics"][k] for k in evaluated["metrics"]}, rel=1e-6)
    model, step = RunDir(run).restore_model("latest")
    assert step == 4 and len(model.hidden) == 12

    shutil.rmtree(run / "checkpoints" / "4")
    resumed = fit(RunDir(run).config(), run, data_dir=tmp_path, resume=True, show_progress=False)
    assert resumed["metrics"] == pytest.approx(saved["metrics"], rel=1e-6)
    assert sorted(p.name for p in (run / "checkpoints" / "4").iterdir() if p.is_dir()) == [
        "meta", "metrics", "model", "optimizer"]


def test_every_task_kind_has_one_registered_task():
    from dlcli.specs.tasks import TASK_KINDS
    from dlcli.tasks import TASKS, Task, adversarial, reconstruction, supervised  # noqa: F401  (registers them)

    assert TASKS.names() == TASK_KINDS.names()
    assert all(issubclass(task, Task) and task.kind == name for name, task in TASKS.items())


def test_every_dataset_declares_the_dataset_protocol():
    """Generic code asks every dataset for `info`, `load`, `baseline` and `summary`, and
    probes none: each registered dataset is a `DatasetSpec` that defines them."""
    from dlcli.config import DATASETS
    from dlcli.data import DatasetSpec

    assert DATASETS.names()
    for name, dataset in DATASETS.items():
        assert issubclass(dataset, DatasetSpec), name
        assert dataset.info is not DatasetSpec.info and dataset.load is not DatasetSpec.load, name
        assert isinstance(dataset.summary, str) and dataset.summary, name
