"""Bad input through the CLI: one `error:` line on stderr, exit code 2, no traceback,
and an existing run folder left exactly as it was. Most cases run the command line in
this process (`invoke`); a damaged checkpoint, whose failed reads leave Orbax threads
printing behind the error line, and a dataset download are run as real processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import typing
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA, TINY, cli_env, invoke, run_cli, sets, snapshot, train_json

from dlcli.config import DATASETS, MODELS, OptimizerConfig
from dlcli.data.vision import IDX_FILES
from dlcli.training.evaluate import evaluate_run

TINY_RUN = [*TINY, "model.width=16", "checkpoint.min_interval_s=0"]
OPTIMIZERS = ", ".join(typing.get_args(typing.get_type_hints(OptimizerConfig)["name"]))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished tiny digits run (checkpoints at steps 2 and 4); never modified."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert train_json("--run-dir", str(run), *sets(*TINY_RUN))["steps"] == 4
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def refuse(folder: Path, args: list[str], env: dict | None = None, process: bool = False, cwd: Path = REPO) -> list[str]:
    """Run dlcli ARGS in `cwd` (in this process, or as a real one); assert exit code 2,
    nothing on stdout (with --json, the error object of the stderr line) and `folder`
    untouched. Returns the stderr lines."""
    before = snapshot(folder)
    result = (run_cli if process else invoke)(*args, env=env, cwd=cwd)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert result.stdout == (json.dumps({"error": line, "exit_code": 2}) + "\n" if "--json" in args else "")
    assert snapshot(folder) == before
    return result.stderr.strip().splitlines()


def error_line(folder: Path, args: list[str], needles: list[str], env: dict | None = None,
               process: bool = False, cwd: Path = REPO) -> str:
    """`refuse`, plus: exactly one stderr line, `error: ...`, holding every needle."""
    lines = refuse(folder, args, env, process, cwd)
    assert len(lines) == 1 and lines[0].startswith("error: "), "\n".join(lines)
    assert "Traceback" not in lines[0]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def fill(args: list[str], **paths: Path) -> list[str]:
    return [arg.format(**paths) for arg in args]


def write_files(folder: Path, files: dict) -> None:
    """{name: text, bytes, or None for a FIFO} written under `folder`."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


# (files to write into {dir}, arguments after `train`, substrings of the error line)
AE = ["model.name=autoencoder", "data.normalize=unit"]

CONFIG_ERRORS = [
    pytest.param({}, sets(*AE, "model.code=64"), ["model.code 64 is not narrower than the 64 input values"],
                 id="bottleneck-wider-than-input"),
    pytest.param({}, sets(*AE, "analysis.normal_classes=[0,1,2,3,4,5,6,7,8,9]"),
                 ["analysis.normal_classes names every class"], id="normal-classes-all"),
    pytest.param({}, sets(*AE, "analysis.normal_classes=[]"), ["analysis.normal_classes names no class"],
                 id="normal-classes-none"),
    pytest.param({}, sets(*AE, "model.name=denoising_autoencoder", "model.noise=salt"),
                 ["model.noise must be one of: gaussian, masking; got 'salt'"], id="unknown-noise"),
    pytest.param({}, sets("model.name=vae"), ["set data.normalize: unit"], id="autoencoder-on-standardised-data"),
    pytest.param({}, sets("analysis.pca=true"), ["the analysis section applies to autoencoder runs"],
                 id="analysis-on-a-classifier"),
    pytest.param({}, sets("model.name=encoder_classifier", "model.autoencoder_run={dir}"),
                 ["is not a dlcli run folder with checkpoints"], id="finetune-without-autoencoder-run"),
    pytest.param({}, sets("model.name=gan", "data.name=ring8", "model.n_critic=0"), ["model.n_critic must be >= 1, got 0"],
                 id="gan-n-critic-zero"),
    pytest.param({}, sets("model.name=gan", "data.name=ring8", "model.loss=hinge", "model.gp_weight=10"),
                 ["model.gp_weight is set but the hinge loss has no gradient penalty", "model.loss: wgan_gp"],
                 id="gradient-penalty-without-wgan"),
    pytest.param({}, sets("model.name=gan", "data.name=ring8", "model.loss=wgan_gp", "model.r1_weight=1"),
                 ["model.r1_weight is set but the wgan_gp loss has its own penalty", "model.loss: non_saturating or hinge"],
                 id="r1-with-wgan-gp"),
    pytest.param({}, sets("model.name=gan", "data.name=ring8", "model.architecture=dcgan"),
                 ["an image generator (architecture: dcgan) cannot model data of shape (2,)", "architecture: mlp"],
                 id="image-generator-on-2d-data"),
    pytest.param({}, sets("model.name=gan", "data.normalize=unit"),
                 ["a GAN on images is measured by a classifier", "set model.classifier_run"], id="image-gan-without-judge"),
    pytest.param({}, sets("model.name=gan", "data.name=ring8", "optimizer.learning_rate=0.01"),
                 ["model 'gan' has an Adam optimizer per network", "remove the optimizer section"],
                 id="gan-with-optimizer-section"),
    pytest.param({}, sets("model.name=gan", "data.normalize=unit", "model.classifier_run={dir}"),
                 ["is not a dlcli run folder with checkpoints"], id="gan-judge-not-a-run"),
    pytest.param({}, ["{dir}/missing.yaml"], ["missing.yaml does not exist"], id="missing-config-file"),
    pytest.param({"bad.yaml": "model: [mlp\n"}, ["{dir}/bad.yaml"], ["bad.yaml is not valid YAML at line 2"],
                 id="malformed-yaml"),
    pytest.param({"list.yaml": "- model\n- data\n"}, ["{dir}/list.yaml"], ["must hold a mapping", "got a list"],
                 id="yaml-list"),
    pytest.param({}, sets("training.batchsize=8"),
                 ["unknown config key 'training.batchsize'", "did you mean 'training.batch_size'"], id="unknown-key"),
    pytest.param({}, sets("training.batch_size=abc"), ["training.batch_size must be an integer", "'abc'"],
                 id="wrong-type"),
    pytest.param({}, sets("optimizer.learning_rate=-0.1"), ["optimizer.learning_rate must be > 0", "-0.1"],
                 id="negative-learning-rate"),
    pytest.param({}, sets("training.batch_size=0"), ["training.batch_size must be >= 1, got 0"], id="zero-batch-size"),
    pytest.param({}, sets("model.dropout=1.5"), ["model.dropout must be < 1", "1.5"], id="dropout-above-one"),
    pytest.param({}, sets("model.name=mpl"),
                 ["unknown model 'mpl'", "did you mean 'mlp'", f"valid: {', '.join(MODELS.names())}"],
                 id="unknown-model"),
    pytest.param({}, sets("data.name=cifar10"),
                 ["unknown dataset 'cifar10'", f"valid: {', '.join(DATASETS.names())}"], id="unknown-dataset"),
    pytest.param({}, sets("optimizer.name=adamax"), [f"optimizer.name must be one of: {OPTIMIZERS}"],
                 id="unknown-optimizer"),
    pytest.param({}, sets("model.name=cnn", "data.name=regression1d"), ["model 'cnn' needs image input"],
                 id="cnn-on-regression1d"),
    pytest.param({}, ["--seed", "abc"], ["--seed"], id="non-integer-seed"),
    pytest.param({}, sets("model.name=lstm", "data.name=adding", "data.length=0"), ["data.length must be >= 2, got 0"],
                 id="sequence-length-zero"),
    pytest.param({}, sets("model.name=gru", "data.name=adding", "model.hidden=0"), ["model.hidden must be >= 1, got 0"],
                 id="hidden-size-zero"),
    pytest.param({}, sets("model.name=lstm"), ["model 'lstm' reads sequences", "use a sequence dataset"],
                 id="lstm-on-digits"),
    pytest.param({}, sets("data.name=adding"), ["model 'mlp' takes fixed-size inputs", "rnn, lstm or gru"],
                 id="mlp-on-a-sequence-task"),
    pytest.param({}, sets("model.name=lstm", "data.name=adding", "task.name=classification"),
                 ["task.name is 'classification'", "'adding' is a regression dataset"], id="task-mismatch"),
    pytest.param({}, sets("model.name=lstm", "data.name=text", "data.path=x.txt", "model.bidirectional=true"),
                 ["bidirectional lstm would see the characters it must predict"], id="bidirectional-language-model"),
    pytest.param({}, sets("model.name=mlp", "training.gradient_flow=true"),
                 ["training.gradient_flow needs a recurrent model"], id="gradient-flow-on-mlp"),
    pytest.param({}, sets("model.name=lstm", "data.name=text"), ["data.path is empty"], id="text-without-path"),
    pytest.param({}, sets("model.name=transformer_decoder", "data.name=copy_memory", "model.width=30", "model.heads=4"),
                 ["model.width 30 is not divisible by model.heads 4"], id="width-not-divisible-by-heads"),
    pytest.param({}, sets("model.name=transformer_decoder", "data.name=copy_memory", "model.context=50"),
                 ["sequences of 70 steps are longer than model.context 50"], id="context-shorter-than-sequences"),
    pytest.param({}, sets("model.name=transformer_decoder", "data.name=adding"),
                 ["model 'transformer_decoder' predicts a token at every step"], id="decoder-on-a-regression-task"),
    pytest.param({}, sets("model.name=vit", "data.name=mnist", "model.patch=5"),
                 ["model.patch 5 does not divide the 28x28 images", "2, 4, 7, 14, 28"], id="patch-not-dividing-the-image"),
    pytest.param({}, sets("model.name=transformer_encoder", "data.name=copy_memory", "model.context=50"),
                 ["sequences of 70 steps are longer than model.context 50"], id="learned-table-shorter-than-sequences"),
    pytest.param({"t.txt": "abc " * 100}, sets("model.name=transformer_encoder", "data.name=text", "data.path={dir}/t.txt"),
                 ["an encoder sees every position", "transformer_decoder"], id="encoder-as-language-model"),
    pytest.param({}, sets("model.name=transformer_seq2seq", "data.name=adding"),
                 ["maps a source sequence to a target sequence", "reverse, sort, addition"], id="seq2seq-on-regression"),
    pytest.param({}, sets("model.name=lstm", "data.name=text", "data.path={dir}/nothing.txt"),
                 ["text file {dir}/nothing.txt was found neither as given nor under the data directory"],
                 id="text-file-missing"),
    pytest.param({"empty.txt": ""}, sets("model.name=lstm", "data.name=text", "data.path={dir}/empty.txt"),
                 ["empty.txt is empty"], id="text-file-empty"),
    pytest.param({"latin1.txt": "caf\xe9 au lait".encode("latin-1")},
                 sets("model.name=lstm", "data.name=text", "data.path={dir}/latin1.txt"),
                 ["latin1.txt is not UTF-8 (byte 3 cannot be decoded)"], id="text-file-not-utf8"),
]


@pytest.mark.parametrize("files, args, needles", CONFIG_ERRORS)
def test_config_error(run_copy, tmp_path, files, args, needles):
    """Refused before any work, even with --overwrite: the existing run survives."""
    write_files(tmp_path, files)
    needles = fill(needles, dir=tmp_path)
    error_line(run_copy, ["train", *fill(args, dir=tmp_path), "--run-dir", str(run_copy), "--overwrite"], needles)


def test_scientific_notation_is_a_number():
    result = invoke("config", "show", *sets("optimizer.learning_rate=1e-4"))
    assert result.returncode == 0, result.stderr
    assert "learning_rate: 0.0001" in result.stdout


def drop_checkpoints(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")


def drop_config(run: Path) -> None:
    (run / "config.yaml").unlink()


def break_config(run: Path) -> None:
    (run / "config.yaml").write_text("model: [mlp\n")


TRAIN = ["train", "--run-dir", "{run}", *sets(*TINY_RUN)]
RESUME = [*TRAIN, "--resume"]

# (how to prepare the run copy, dlcli arguments, substrings of the error line)
RUN_FOLDER_ERRORS = [
    pytest.param(None, TRAIN, ["already holds a run", "--resume", "--overwrite"], id="existing-run-without-flags"),
    pytest.param(None, [*RESUME, *sets("training.steps=6")],
                 ["differs from the run's saved config at training.steps (4 -> 6)"], id="resume-with-changed-config"),
    pytest.param(drop_checkpoints, RESUME, ["holds no checkpoint to resume from"], id="resume-without-checkpoint"),
    pytest.param(None, ["eval", "{run}", "--checkpoint", "12345"],
                 ["--checkpoint '12345' is not available", "saved steps: 2, 4"], id="eval-missing-step"),
    pytest.param(drop_config, RESUME, ["config.yaml"], id="resume-without-config-yaml"),
    pytest.param(break_config, RESUME, ["config.yaml", "not valid YAML"], id="resume-with-malformed-config-yaml"),
]


@pytest.mark.parametrize("prepare, args, needles", RUN_FOLDER_ERRORS)
def test_run_folder_error(run_copy, prepare, args, needles):
    if prepare:
        prepare(run_copy)
    error_line(run_copy, fill(args, run=run_copy), needles)


def test_eval_on_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8not really")
    error_line(folder, ["eval", str(folder)], [f"{folder} is not a dlcli run folder"])


@pytest.fixture
def closed_url():
    """http://127.0.0.1:PORT where PORT is bound but never listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.e2e
def test_missing_dataset_files(run_copy, tmp_path, closed_url):
    """No files and no reachable mirror: the line names the files and the folder, and
    --overwrite has not removed the existing run."""
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    env = cli_env(data_dir, DLCLI_DATA_MIRROR=closed_url, no_proxy="127.0.0.1",
                  http_proxy=closed_url, https_proxy=closed_url)
    args = ["train", "--run-dir", str(run_copy), "--overwrite", *sets(*TINY_RUN, "data.name=mnist")]
    error_line(run_copy, args, [*IDX_FILES, f"in {data_dir / 'mnist'}/", f"{closed_url}/mnist/"], env, process=True)


def newest_model_file(run: Path) -> tuple[int, Path]:
    """(newest checkpoint step, the largest file of its Orbax `model` item: the array data)."""
    step = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    files = [p for p in (run / "checkpoints" / str(step) / "model").rglob("*") if p.is_file()]
    return step, max(files, key=lambda p: p.stat().st_size)


COMMANDS = {"eval": ["eval", "{run}", "--checkpoint", "latest", "--json"], "resume": [*RESUME, "--json"]}


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip_bytes(path: Path) -> None:
    """Inside the first layer's kernel: Orbax reads it, the checksum saved with it does not match."""
    data = bytearray(path.read_bytes())
    start = len(data) // 8
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "bit-flipped": flip_bytes, "missing": Path.unlink}


@pytest.mark.e2e
@pytest.mark.parametrize("command, damage", [("eval", "truncated"), ("resume", "bit-flipped"), ("eval", "missing")])
def test_a_damaged_latest_checkpoint_is_named_and_passed_over_for_the_newest_readable_one(run_copy, command, damage):
    step, data_file = newest_model_file(run_copy)
    DAMAGE[damage](data_file)

    result = run_cli(*fill(COMMANDS[command], run=run_copy))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr  # none from Orbax's unfinished restore tasks either
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint {step} in "), result.stderr
    assert "is corrupt or unreadable" in warnings[0] and "using checkpoint 2, the newest readable one" in warnings[0]
    if command == "eval":
        assert json.loads(result.stdout)["checkpoint"] == 2
    else:  # resumed from step 2, and the damaged step written again, readable
        assert json.loads(result.stdout)["steps"] == step
        assert evaluate_run(run_copy, checkpoint="latest", split="val", data_dir=SHARED_DATA)["checkpoint"] == step


@pytest.mark.e2e
def test_no_readable_checkpoint_is_refused_in_one_line(run_copy):
    for step in (2, 4):
        files = [p for p in (run_copy / "checkpoints" / str(step) / "model").rglob("*") if p.is_file()]
        truncate(max(files, key=lambda p: p.stat().st_size))
    lines = refuse(run_copy, fill(COMMANDS["resume"], run=run_copy), process=True)
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith("error: none of the 2 checkpoints in ") and "retrain with --overwrite" in lines[0]


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> Path:
    """A tiny character language model run on a short text."""
    folder = tmp_path_factory.mktemp("lm")
    (folder / "text.txt").write_text("to be or not to be, that is the question. " * 40)
    run = folder / "run"
    train_json("--run-dir", str(run), *sets(*TINY, "model.name=gru", "model.hidden=8", "data.name=text",
                                           f"data.path={folder / 'text.txt'}", "data.seq_length=16"))
    return run


SAMPLE_ERRORS = [
    pytest.param(["--prompt", "to be€"], ["the character '€' is not in the model's vocabulary"], id="prompt-out-of-vocabulary"),
    pytest.param(["--prompt", ""], ["--prompt is empty"], id="empty-prompt"),
    pytest.param(["--prompt", "to", "--length", "0"], ["--length must be at least 1, got 0"], id="zero-length"),
    pytest.param(["--prompt", "to", "--temperature", "-1"], ["--temperature must be 0 (greedy) or a finite number"],
                 id="negative-temperature"),
    pytest.param(["--prompt", "to", "--temperature", "nan"], ["--temperature must be 0 (greedy) or a finite number",
                                                              "got nan"], id="nan-temperature"),
    pytest.param(["--prompt", "to", "--temperature", "inf"], ["--temperature must be 0 (greedy) or a finite number"],
                 id="infinite-temperature"),
    pytest.param(["--prompt", "to", "--top-k", "999"], ["--top-k must be between 1 and the vocabulary size"],
                 id="top-k-above-vocabulary"),
]


@pytest.mark.parametrize("args, needles", SAMPLE_ERRORS)
def test_sample_error(language_model, args, needles):
    error_line(language_model, ["sample", str(language_model), *args], needles)


def test_autoencoder_commands_on_a_classifier_run(trained_run, tmp_path):
    error_line(trained_run, ["embed", str(trained_run), "--out", str(tmp_path / "c.npz")],
               ["trained 'mlp', which has no code to export", "needs an autoencoder run"])
    error_line(trained_run, ["sample", str(trained_run), "--n", "4", "--out", str(tmp_path / "g.png")],
               ["trained 'mlp', which does not draw samples"])
    error_line(trained_run, ["train", "--run-dir", str(tmp_path / "ft"), *sets(
        "model.name=encoder_classifier", f"model.autoencoder_run={trained_run}")],
        ["trained 'mlp', not an autoencoder"])
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "g.png").exists() and not (tmp_path / "ft").exists()


def test_sample_from_a_run_that_is_not_a_language_model(trained_run):
    error_line(trained_run, ["sample", str(trained_run), "--prompt", "a"],
               ["neither a language model nor a sequence-to-sequence model", "data.name: text, reverse"])


# ----- the corpus: every input channel, each case one line, exit 2, nothing changed --------
# (files to write into {dir}, the whole command line, substrings of the error line). The
# command runs with {dir} as its working folder and everything under {dir} (the run
# copy included, as {run}) must be left exactly as it was.
SWEEP = "base: {base}\nspace:\n  optimizer.learning_rate: [0.001, 0.003]\n"
TINY_YAML = "training: {steps: 4, eval_every: 2, batch_size: 32}\n"
BIG_GRID = "space:\n" + "".join(f"  model.{key}: [{', '.join(str(v) for v in range(1, 11))}]\n"
                                  for key in ("width", "depth")) + \
           "".join(f"  optimizer.{key}: [{', '.join(str(v / 100) for v in range(1, 11))}]\n"
                   for key in ("learning_rate", "b1", "b2", "eps", "weight_decay"))
ALIAS_BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)) + "model: {widths: *i}\n"

CORPUS = [
    # command-line flags
    pytest.param({}, ["train", "--seed", "-1"], ["seed must be >= 0, got -1"], id="flag-negative-seed"),
    pytest.param({}, ["train", "--seed", "99999999999999999999999"], ["seed must be <= 4294967295"], id="flag-huge-seed"),
    pytest.param({}, ["train", "--run-dir", ""], ["--run-dir is empty"], id="flag-empty-run-dir"),
    pytest.param({"file.txt": "x"}, ["train", "--run-dir", "{dir}/file.txt/run"], ["not a directory"],
                 id="flag-run-dir-under-a-file"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--steps", "0"], ["--steps must be >= 1, got 0"],
                 id="flag-zero-steps"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--depths", "a,b"], ["--depths must be comma-separated ints"],
                 id="flag-depths-not-numbers"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--depths", ","], ["--depths must be comma-separated ints"],
                 id="flag-depths-empty-list"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--depths", "0,2"], ["--depths must be >= 1, got 0"],
                 id="flag-depth-zero"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--seeds", "0"], ["--seeds must be >= 1, got 0"], id="flag-zero-seeds"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--workers", "100000"], ["--workers must be <= 1024"],
                 id="flag-absurd-workers"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--lr", "nan"], ["--lr must be a positive finite number, got nan"],
                 id="flag-nan-learning-rate"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--tune-lr", "--lr-grid", "0.1,x"],
                 ["--lr-grid must be comma-separated floats"], id="flag-malformed-lr-grid"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--baseline", "zzz"],
                 ["--baseline 'zzz' is not an arm", "depth 1, depth 2"], id="flag-unknown-baseline"),
    pytest.param({"a.yaml": TINY_YAML, "b.yaml": TINY_YAML}, ["compare", "a.yaml", "b.yaml", "--baseline", "c"],
                 ["--baseline 'c' is not an arm", "choose one of: a, b"], id="flag-unknown-baseline-of-configs"),
    pytest.param({"file.txt": "x"}, ["compare", "shallow-vs-deep", "--out", "file.txt"],
                 ["--out file.txt is a file, not a folder"], id="flag-compare-out-is-a-file"),
    pytest.param({}, ["compare", "shallow-vs-deep", "--out", ""], ["--out is empty"], id="flag-compare-out-empty"),
    pytest.param({"file.txt": "x", "s.yaml": SWEEP.format(base="null")}, ["sweep", "s.yaml", "--out", "file.txt"],
                 ["--out file.txt is a file, not a folder"], id="flag-sweep-out-is-a-file"),
    pytest.param({"s.yaml": SWEEP.format(base="null")}, ["sweep", "s.yaml", "--workers", "0"],
                 ["--workers must be >= 1, got 0"], id="flag-sweep-zero-workers"),
    pytest.param({}, ["eval", "{run}", "--checkpoint", "-1"], ["--checkpoint '-1' is not available"],
                 id="flag-negative-checkpoint"),
    pytest.param({}, ["eval", "{dir}/nowhere"], ["is not a dlcli run folder"], id="flag-eval-missing-folder"),
    # --set overrides
    pytest.param({}, ["train", *sets("seed=-5")], ["seed must be >= 0, got -5"], id="set-negative-seed"),
    pytest.param({}, ["train", *sets("training.epochs=1e30")], ["training.epochs must be <= 2147483647"],
                 id="set-epochs-1e30"),
    pytest.param({}, ["train", *sets("training.steps=3e9")], ["training.steps must be <= 2147483647"],
                 id="set-steps-beyond-int32"),
    pytest.param({}, ["train", *sets("training.epochs=nan")], ["training.epochs must be an integer"], id="set-nan-epochs"),
    pytest.param({}, ["train", *sets("optimizer.learning_rate=.nan")], ["optimizer.learning_rate must be a finite number"],
                 id="set-nan-learning-rate"),
    pytest.param({}, ["train", *sets("optimizer.learning_rate=nan")], ["optimizer.learning_rate must be a number",
                                                                        "'nan' (str)"], id="set-nan-word-learning-rate"),
    pytest.param({}, ["train", *sets("optimizer.learning_rate=.inf")], ["optimizer.learning_rate must be a finite number"],
                 id="set-infinite-learning-rate"),
    pytest.param({}, ["train", *sets("model.width=1000000000")], ["parameters", "GiB of training state",
                                                                   "make it smaller"], id="set-absurd-width"),
    pytest.param({}, ["train", *sets("model.name=transformer_decoder", "data.name=copy_memory", "model.context=1000000", "model.width=65536")],
                 ["parameters", "make it smaller"], id="set-absurd-context"),
    pytest.param({}, ["train", *sets("model.name=transformer_decoder", "data.name=copy_memory", "model.context=2000000000")],
                 ["model.context must be <= 1000000"], id="set-context-out-of-range"),
    pytest.param({}, ["train", *sets("name=../../escape")], ["name '../../escape' cannot name a folder", "'escape'"],
                 id="set-name-escaping-runs"),
    pytest.param({}, ["train", *sets("name=/tmp/absolute")], ["name '/tmp/absolute' cannot name a folder"],
                 id="set-absolute-name"),
    pytest.param({}, ["train", *sets("name=.")], ["name '.' cannot name a folder"], id="set-name-dot"),
    pytest.param({}, ["train", *sets("name=..")], ["name '..' cannot name a folder"], id="set-name-dot-dot"),
    pytest.param({}, ["train", *sets("name=")], ["name must be a string"], id="set-empty-name"),
    pytest.param({}, ["train", *sets("data.name=moons", "data.seed=-1")], ["data.seed must be >= 0, got -1"],
                 id="set-negative-data-seed"),
    pytest.param({}, ["train", *sets("model.widths=[8, -1]")], ["model.widths[1] must be >= 1, got -1"],
                 id="set-negative-list-item"),
    pytest.param({}, ["train", *sets("model.widths=[8,")], ["model.widths must be a list"], id="set-malformed-list"),
    pytest.param({}, ["train", *sets("training.batch_size=[1, 2]")], ["training.batch_size must be an integer"],
                 id="set-list-for-a-number"),
    pytest.param({}, ["train", *sets("training=5")], ["training must be a mapping"], id="set-value-for-a-section"),
    pytest.param({}, ["train", *sets("=5")], ["is not of the form key.path=value"], id="set-no-key"),
    pytest.param({}, ["train", *sets("training.batch_size.x=5")], ["training.batch_size must be an integer"],
                 id="set-section-for-a-value"),
    pytest.param({}, ["train", *sets("model.name=gru", "data.name=adding", "data.length=1000000000")],
                 ["data.length must be <= 100000"], id="set-absurd-sequence-length"),
    # config files
    pytest.param({"c.yaml": "seed: 1\nseed: 2\n"}, ["train", "c.yaml"], ["the key 'seed' is given twice", "line 2"],
                 id="file-duplicate-key"),
    pytest.param({"c.yaml": "training:\n  steps: 4\n  steps: 5\n"}, ["train", "c.yaml"],
                 ["the key 'steps' is given twice"], id="file-duplicate-nested-key"),
    pytest.param({"c.yaml": "name: !!python/object/apply:os.system ['touch pwned']\n"}, ["train", "c.yaml"],
                 ["is not valid YAML", "python/object/apply:os.system"], id="file-python-tag"),
    pytest.param({"c.yaml": "name: \"a\\0b\"\n"}, ["train", "c.yaml"], ["cannot name a folder", "'a_b'"], id="file-nul-in-name"),
    pytest.param({"c.yaml": "name: \"a\\nb\"\n"}, ["train", "c.yaml"], ["cannot name a folder"], id="file-newline-in-name"),
    pytest.param({"c.yaml": "name: \"\"\n"}, ["train", "c.yaml"], ["name '' cannot name a folder"], id="file-empty-name"),
    pytest.param({"c.yaml": b"\xff\xfe\x00garbage\x00\x01"}, ["train", "c.yaml"], ["is not valid YAML"], id="file-binary"),
    pytest.param({"c.yaml": "[" * 5000}, ["train", "c.yaml"], ["is not valid YAML"], id="file-deeply-nested"),
    pytest.param({"c.yaml": ALIAS_BOMB}, ["train", "c.yaml"], ["unknown config key 'a'"], id="file-alias-bomb"),
    pytest.param({"c.yaml": "5\n"}, ["train", "c.yaml"], ["must hold a mapping", "got a int"], id="file-scalar"),
    pytest.param({"sub/x.txt": "x"}, ["train", "sub"], ["config file sub is a folder"], id="file-is-a-folder"),
    pytest.param({}, ["train", "/dev/null"], ["/dev/null is not a regular file"], id="file-is-a-device"),
    pytest.param({"fifo": None}, ["train", "fifo"], ["fifo is not a regular file"], id="file-is-a-pipe"),
    pytest.param({"c.yaml": "model: {name: mlp, width: 16}\nmodel: {name: cnn}\n"}, ["config", "show", "c.yaml"],
                 ["the key 'model' is given twice"], id="file-duplicate-section-in-config-show"),
    # sweep files
    pytest.param({"s.yaml": "strategy: random\ntrials: 100000000000\n" + SWEEP.format(base="null")}, ["sweep", "s.yaml"],
                 ["trials must be <= 100000"], id="sweep-absurd-trials"),
    pytest.param({"s.yaml": BIG_GRID}, ["sweep", "s.yaml"], ["the grid has 10,000,000 combinations"],
                 id="sweep-absurd-grid"),
    pytest.param({"s.yaml": "name: ../x\n" + SWEEP.format(base="null")}, ["sweep", "s.yaml"],
                 ["name '../x' cannot name a folder"], id="sweep-name-escaping"),
    pytest.param({"s.yaml": "workers: 0\n" + SWEEP.format(base="null")}, ["sweep", "s.yaml"],
                 ["workers must be >= 1, got 0"], id="sweep-zero-workers"),
    pytest.param({"s.yaml": "seed: 1\nseed: 2\n" + SWEEP.format(base="null")}, ["sweep", "s.yaml"],
                 ["the key 'seed' is given twice"], id="sweep-duplicate-key"),
    pytest.param({"s/x.txt": "x"}, ["sweep", "s"], ["config file s is a folder"], id="sweep-file-is-a-folder"),
    pytest.param({"s.yaml": SWEEP.format(base="nothing.yaml")}, ["sweep", "s.yaml"], ["base 'nothing.yaml' does not exist"],
                 id="sweep-missing-base"),
    pytest.param({"s.yaml": "space:\n  optimizer.learning_rate: {distribution: uniform, low: 1, high: 0}\n"
                            "strategy: random\ntrials: 2\n"}, ["sweep", "s.yaml"], ["needs low < high"],
                 id="sweep-inverted-range"),
    # compare files
    pytest.param({"a.yaml": TINY_YAML}, ["compare", "a.yaml", "missing.yaml"], ["missing.yaml does not exist"],
                 id="compare-missing-file"),
    pytest.param({"a.yaml": TINY_YAML, "b.yaml": "name: x\nname: y\n"}, ["compare", "a.yaml", "b.yaml"],
                 ["the key 'name' is given twice"], id="compare-duplicate-key"),
    pytest.param({"a.yaml": TINY_YAML, "b/x.txt": "x"}, ["compare", "a.yaml", "b"], ["config file b is a folder"],
                 id="compare-file-is-a-folder"),
    # data folders
    pytest.param({"corpus/x.txt": "x"}, ["train", *sets("model.name=gru", "data.name=text", "data.path=corpus")],
                 ["corpus"], id="data-text-path-is-a-folder"),
]


@pytest.mark.parametrize("files, args, needles", CORPUS)
def test_corpus(run_copy, tmp_path, files, args, needles):
    """Run from {dir}: nothing under it changes (the run copy included), nothing is
    written where a name points outside it."""
    write_files(tmp_path, files)
    error_line(tmp_path, fill(args, dir=tmp_path, run=run_copy), fill(needles, dir=tmp_path), cwd=tmp_path)
    assert not (tmp_path.parent / "escape").exists() and not Path("/tmp/absolute").exists()
