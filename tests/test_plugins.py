"""The user's own model family and dataset (examples/plugin/my_models.py), named by a file
reference, a module reference or an entry point: trained, evaluated from elsewhere in a
fresh process, resumed and compared through the worker processes like the built-ins,
with their exact parameter count; and every way a reference can be wrong, in one line."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import jax
import pytest
from flax import nnx

from conftest import REPO, cli_env, invoke, run_cli, sets

EXAMPLE = REPO / "examples" / "plugin"
MODELS_FILE = EXAMPLE / "my_models.py"
TINY = ["training.steps=8", "training.eval_every=4", "training.batch_size=16", "training.eval_batch_size=128",
        "checkpoint.min_interval_s=0", "data.n_samples=200", "model.width=8", "model.blocks=1"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, Path, dict]:
    """`dlcli compare` of two plugin experiments, one seed each, in the worker processes
    (one worker): the shipped example (file references, read from its own folder) and a
    noisier copy in a project of the user's that names the model by module (its folder
    on PYTHONPATH, which the workers inherit) and the dataset by a relative path.
    Started from a third folder. Returns (project, comparison folder, its JSON)."""
    project = tmp_path_factory.mktemp("project")
    (project / "configs").mkdir()
    shutil.copy(MODELS_FILE, project / "my_models.py")
    shipped = (EXAMPLE / "spirals.yaml").read_text()
    assert "name: ./my_models.py:ResidualMLP" in shipped and "name: ./my_models.py:TwoSpirals" in shipped
    (project / "configs" / "noisy.yaml").write_text(
        shipped.replace("./my_models.py:ResidualMLP", "my_models:ResidualMLP")
        .replace("./my_models.py:TwoSpirals", "../my_models.py:TwoSpirals").replace("  turns: 3", "  turns: 3\n  noise: 0.2"))
    out = tmp_path_factory.mktemp("comparison")
    result = run_cli("compare", str(EXAMPLE / "spirals.yaml"), str(project / "configs" / "noisy.yaml"), "--seeds", "1",
                     "--workers", "1", "--out", str(out), *sets(*TINY), "--json", cwd=tmp_path_factory.mktemp("cwd"),
                     env=cli_env(PYTHONPATH=str(project)), check=True)
    return project, out, json.loads(result.stdout)


def _leaves(model: nnx.Module) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.e2e
def test_compare_trains_both_kinds_of_reference_in_its_workers(compared):
    from dlcli.runs import RunDir

    project, out, comparison = compared
    arms = {arm["label"]: arm for arm in comparison["arms"]}
    assert {label: arm["params"] for label, arm in arms.items()} == {"spirals": 354, "noisy": 354}
    shipped, noisy = RunDir(out / "runs" / "spirals-seed0").config(), RunDir(out / "runs" / "noisy-seed0").config()
    assert (shipped.model.name, shipped.data.name) == (f"{MODELS_FILE}:ResidualMLP", f"{MODELS_FILE}:TwoSpirals")
    assert (noisy.model.name, noisy.data.name) == ("my_models:ResidualMLP", f"{project / 'my_models.py'}:TwoSpirals")
    assert (shipped.data.noise, noisy.data.noise, noisy.model.width, noisy.data.n_samples) == (0.02, 0.2, 8, 200)


@pytest.mark.e2e
def test_the_parameter_count_is_that_of_the_models_param_leaves(compared):
    from dlcli.runs import RunDir
    from dlcli.specs import ModelSpec

    run = compared[1] / "runs" / "spirals-seed0"
    cfg, summary = RunDir(run).config(), RunDir(run).summary()
    model, step = RunDir(run).restore_model("latest")
    assert step == 8 and type(model).__name__ == "ResidualMLPModule"
    # the closed form, dlcli's default abstract count and the built model's Param leaves agree
    assert summary["params"] == cfg.model.param_count(cfg.info) == ModelSpec.param_count(cfg.model, cfg.info)
    assert summary["params"] == _leaves(model) == _leaves(cfg.model.build(cfg.info, nnx.Rngs(0))) == 354


@pytest.mark.e2e
def test_eval_of_a_run_folder_in_a_fresh_process_from_another_folder(compared, tmp_path):
    run = compared[1] / "runs" / "spirals-seed0"
    summary = json.loads((run / "summary.json").read_text())
    evaluated = json.loads(run_cli("eval", str(run), "--json", cwd=tmp_path, check=True).stdout)
    assert evaluated["params"] == summary["params"]
    assert evaluated["checkpoint"] == summary["evaluated_checkpoint"]
    assert evaluated["metrics"] == {k: v for k, v in summary["metrics"].items() if k.startswith("test/")}


@pytest.mark.e2e
def test_resume_from_the_first_checkpoint_ends_where_the_run_ended(compared, tmp_path):
    """A copy of a run cut back to step 4 resumes to the same end, from another folder;
    and the shipped file with the same overrides names the same classes as the run saved."""
    from dlcli.config import load_config
    from dlcli.runs import RunDir

    run = compared[1] / "runs" / "spirals-seed0"
    with contextlib.chdir(tmp_path):
        again = load_config(EXAMPLE / "spirals.yaml", TINY).to_dict()
    assert {k: again[k] for k in ("model", "data")} == {k: RunDir(run).config().to_dict()[k] for k in ("model", "data")}
    summary = json.loads((run / "summary.json").read_text())
    cut = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(cut / "checkpoints" / "8")
    (cut / "summary.json").unlink()
    saved = run.parent / "spirals-seed0.yaml"  # the resolved config the comparison trained
    resumed = json.loads(invoke("train", str(saved), "--run-dir", str(cut), "--resume", "--json", cwd=tmp_path,
                                check=True).stdout)
    # the comparison trained in a worker process, the resume in this one: the same steps, but
    # programs compiled in another order can round the last bits of a loss differently
    assert resumed["metrics"] == pytest.approx(summary["metrics"], rel=1e-6)
    assert sorted(int(p.name) for p in (cut / "checkpoints").iterdir()) == [4, 8]


def test_installed_packages_declare_models_and_datasets_as_entry_points(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "my_plugin-0.1.dist-info").mkdir(parents=True)
    shutil.copy(MODELS_FILE, site / "my_plugin_models.py")
    (site / "my_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (site / "my_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[dlcli.models]\nresidual_mlp = my_plugin_models:ResidualMLP\n"
        "[dlcli.datasets]\ntwo_spirals = my_plugin_models:TwoSpirals\n")
    monkeypatch.syspath_prepend(str(site))
    models = {m["name"]: m for m in json.loads(invoke("models", "--json", check=True).stdout)}
    assert models["residual_mlp"]["params"] == 33858  # width 64, 2 blocks, on spirals (2 inputs, 2 classes)
    assert models["mlp"]["reference_dataset"] == "mnist"  # the built-ins are still there
    datasets = {d["name"]: d for d in json.loads(invoke("datasets", "--json", check=True).stdout)}
    assert datasets["two_spirals"]["input_shape"] == [2] and datasets["two_spirals"]["outputs"] == 2
    shown = invoke("config", "show", *sets("model.name=residual_mlp", "model.width=4", "data.name=two_spirals"),
                   check=True).stdout
    assert "name: residual_mlp\n  width: 4" in shown and "name: two_spirals\n  n_samples: 2000" in shown


BROKEN = '''
import dataclasses
from typing import ClassVar
from dlcli.specs import ModelSpec

class NotADataclass(ModelSpec):
    summary: ClassVar[str] = "x"
    reference_dataset: ClassVar[str] = "digits"

@dataclasses.dataclass
class NoBuild(ModelSpec):
    summary: ClassVar[str] = "x"
    reference_dataset: ClassVar[str] = "digits"
    name: str = "no_build"
'''


@pytest.mark.parametrize("key, reference, expected", [
    ("model", "no_such_pkg.models:Net", "model.name: module 'no_such_pkg.models' not found; put the folder holding it "
                                        "on PYTHONPATH (or install its package), or name the file itself"),
    ("model", "./no_such_file.py:Net", "model.name: plugin file {cwd}/no_such_file.py does not exist"),
    ("model", f"{MODELS_FILE}:ResidualMLPP", f"model.name: {MODELS_FILE} defines no 'ResidualMLPP' (did you mean 'ResidualMLP'?); classes "
                                             "defined there: ResidualBlock, ResidualMLP, ResidualMLPModule, TwoSpirals"),
    ("model", f"{MODELS_FILE}:ResidualMLPModule", "is the class ResidualMLPModule, which does not subclass ModelSpec; "
                                                  "point it at a @dataclasses.dataclass subclass of "
                                                  "dlcli.specs.base.ModelSpec"),
    ("data", f"{MODELS_FILE}:ResidualMLP", "is the class ResidualMLP, which does not subclass DatasetSpec"),
    ("model", f"{MODELS_FILE}:ACTIVATIONS", "is a dict value, not a model spec class"),
    ("model", "{cwd}/broken.py:NotADataclass", "NotADataclass is not a dataclass"),
    ("model", "{cwd}/broken.py:NoBuild", "NoBuild does not define build, which every model spec declares"),
    ("model", "{cwd}/raises.py:Net", "model.name: importing {cwd}/raises.py raised ValueError: no GPU named 7; "
                                     "fix that file"),
    ("model", "./my_models.py", "unknown model './my_models.py'; valid: "),
])
def test_a_wrong_reference_is_one_line_naming_it(tmp_path, key, reference, expected):
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "raises.py").write_text("import os\n\nraise ValueError('no GPU named 7\\nsecond line')\n")
    result = invoke("config", "show", "--set", f"{key}.name={reference.format(cwd=tmp_path)}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert expected.format(cwd=tmp_path) in result.stderr.replace("\n", "")


@pytest.mark.parametrize("override, expected", [
    ("model.width=0", "model.width must be >= 1, got 0"),
    ("model.widht=3", "unknown config key 'model.widht' (did you mean 'model.width'?)"),
    ("data.turns=x", "data.turns must be a number, got 'x' (str)"),
])
def test_the_plugins_own_keys_are_checked_like_a_builtins(override, expected):
    result = invoke("config", "show", str(EXAMPLE / "spirals.yaml"), "--set", override)
    assert result.returncode == 2 and expected in result.stderr
