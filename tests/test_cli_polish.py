"""The command line as users of other CLIs expect it: --version, bare `dlcli`, switches,
help that wraps at the terminal's width, shell completion (in a real bash), a second run
of an experiment in a new folder, and --json error objects."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import TINY, cli_env, invoke, sets

import dlcli
from dlcli.config import MODELS, load_config

NAME = load_config(None).name  # the built-in default experiment, mlp_digits


def test_version_and_bare_dlcli_need_no_jax():
    """`dlcli --version` and bare `dlcli` exit 0 without importing JAX or Flax (a fresh process)."""
    script = ("import sys\nfrom dlcli.cli import run\n"
              "codes = [run(['--version']), run([]), run(['config']), run(['train', '--help'])]\n"
              "print(codes, 'jax' in sys.modules, 'flax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=cli_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"dlcli {dlcli.__version__} (JAX {metadata.version('jax')}, jaxlib {metadata.version('jaxlib')}, "
                        f"Flax {metadata.version('flax')}, Optax {metadata.version('optax')}, "
                        f"Orbax {metadata.version('orbax-checkpoint')}, Python {sys.version.split()[0]})")
    assert lines[-1] == "[0, 0, 0, 0] False False"
    assert sum("Usage: dlcli [OPTIONS] COMMAND" in line for line in lines) == 1  # bare dlcli: the help
    assert any("Usage: dlcli config [OPTIONS] COMMAND" in line for line in lines)
    assert result.stderr == ""


def _help(*command: str, columns: int) -> str:
    result = invoke(*command, "--help", env=cli_env(COLUMNS=str(columns)))
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commands() -> list[tuple[str, ...]]:
    """Every command and group of the app, as the words that name it ((), ('train',), ('config', 'show'), ...)."""
    import typer

    from dlcli.cli import app

    invoke("--version")  # registers the commands
    found = []

    def walk(command, words):
        found.append(words)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*words, name))

    walk(typer.main.get_command(app), ())
    return found


def test_every_help_shows_switches_and_whole_help_texts():
    """In every command's --help: no `<bool>` (flags are switches), and every option's and
    argument's help, and every paragraph of the command's own, whole on one line at a
    width that wraps nothing (no text lost to Rich markup, none cut by a docstring's
    line breaks)."""
    import typer

    from dlcli.cli import app

    commands = _commands()
    assert {("train",), ("eval",), ("config", "show"), ("compare",), ("sweep",)} <= set(commands)
    root = typer.main.get_command(app)
    for words in commands:
        command = root
        for word in words:
            command = command.commands[word]
        shown = [" ".join(line.replace("│", " ").split()) for line in _help(*words, columns=2000).splitlines()]
        assert not any("<bool>" in line for line in shown), words
        texts = [param.help for param in command.params if getattr(param, "help", None)]
        texts += (command.help or "").split("\n\n")
        for text in texts:
            text = " ".join(text.split())
            assert any(text in line for line in shown), (words, text)
    train = " ".join(" ".join(_help("train", columns=200).split("│")).split())
    assert "--resume Continue the run" in train and "--overwrite Replace the run" in train
    assert "--json Print one JSON object" in train


def test_help_wraps_at_the_terminal_width_and_keeps_paragraphs():
    sentence = ("A multi-process run starts this same command in every process, each with the same --coordinator and "
                "--num-processes and its own --process-id")
    wide = _help("train", columns=200).splitlines()
    assert any(sentence in line for line in wide)  # one line at 200 columns: the docstring breaks after "same"
    narrow = _help("train", columns=60).splitlines()
    assert max(len(line) for line in narrow) <= 60
    start = next(i for i, line in enumerate(narrow) if line.strip().startswith("A multi-process run"))
    assert narrow[start - 1].strip() == ""  # the paragraphs stay apart
    end = next(i for i in range(start, len(narrow)) if not narrow[i].strip())
    paragraph = [line.strip() for line in narrow[start:end]]
    assert " ".join(paragraph).startswith(sentence)
    assert all(len(line) > 40 for line in paragraph[:-1])  # lines filled to the width, not broken where the source is


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """A working folder where `dlcli train` ran twice without --run-dir: seed 0, then seed 1."""
    cwd = tmp_path_factory.mktemp("cwd")
    first = invoke("train", *sets(*TINY), "--json", cwd=cwd, check=True)
    second = invoke("train", *sets(*TINY), "--seed", "1", "--json", cwd=cwd, check=True)
    return cwd, first, second


def test_a_second_run_goes_to_a_new_folder_and_resume_finds_it(runs):
    cwd, first, second = runs
    assert json.loads(first.stdout)["run_dir"] == f"runs/{NAME}" and "runs/" not in first.stderr
    assert json.loads(second.stdout)["run_dir"] == f"runs/{NAME}-2"
    assert f"this run goes to runs/{NAME}-2: runs/{NAME} exists and a new run never writes into an earlier one" \
        in second.stderr
    assert load_config(cwd / "runs" / NAME / "config.yaml").seed == 0  # the first run is untouched
    assert load_config(cwd / "runs" / f"{NAME}-2" / "config.yaml").seed == 1

    resumed = invoke("train", *sets(*TINY), "--seed", "1", "--resume", "--json", cwd=cwd, check=True)
    assert json.loads(resumed.stdout)["run_dir"] == f"runs/{NAME}-2"
    assert f"resuming runs/{NAME}-2, the newest run of {NAME} with this config" in resumed.stderr
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == [NAME, f"{NAME}-2"]


def test_which_folder_resume_overwrite_and_a_new_run_take(runs, capsys):
    from dlcli.cli.train import automatic_run_dir

    cwd = runs[0]

    def chosen(seed: int, **flags) -> str:
        return str(automatic_run_dir(load_config(None, TINY, seed), **{"resume": False, "overwrite": False, **flags}))

    with contextlib.chdir(cwd):
        assert chosen(0, resume=True) == f"runs/{NAME}"  # the run with this config, though not the newest
        assert chosen(1, overwrite=True) == f"runs/{NAME}-2"
        assert chosen(0) == f"runs/{NAME}-3"  # a new run, even of the same config
        assert chosen(7, overwrite=True) == f"runs/{NAME}-3"  # nothing to replace: a new folder
        assert chosen(7, resume=True) == f"runs/{NAME}-2"  # nothing with this config: the newest, which fit refuses
        assert f"no run of {NAME} in runs has this config; trying the newest, runs/{NAME}-2" in capsys.readouterr().err
        (cwd / "runs" / f"{NAME}-9").mkdir()  # numbers follow the highest, so the newest is the last
        try:
            assert chosen(0) == f"runs/{NAME}-10"
        finally:
            (cwd / "runs" / f"{NAME}-9").rmdir()
    refused = invoke("train", *sets(*TINY), "--seed", "7", "--resume", cwd=cwd)
    assert refused.returncode == 2 and "differs from the run's saved config at seed (1 -> 7)" in refused.stderr


def _completions(words: str, cwd: Path) -> list[str]:
    """What zsh gets for the command line `words` (Typer's zsh protocol), in this process."""
    result = invoke(env=cli_env(_DLCLI_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS=words), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [line.strip('"').split('":"')[0] for line in result.stdout.replace("_arguments '*: :((", "\n")
            .replace("))'", "").splitlines() if line.strip('"')]


def test_completion_of_experiments_run_folders_and_overrides(runs):
    cwd = runs[0]
    repo = Path(__file__).resolve().parents[1]
    assert "experiments/cnn_mnist.yaml" in _completions("dlcli train experiments/cn", repo)
    assert all(c.startswith("experiments/cn") for c in _completions("dlcli train experiments/cn", repo))
    assert _completions("dlcli eval ", cwd) == [f"runs/{NAME}", f"runs/{NAME}-2"]
    assert _completions("dlcli eval runs/x", cwd) == ["_files"]  # nothing of ours: the shell's file names
    assert _completions("dlcli train --set model.name=", cwd) == [f"model.name={name}" for name in MODELS.names()]
    assert "training.steps=" in _completions("dlcli train --set training.st", cwd)


@pytest.mark.e2e
def test_completion_installed_in_a_real_bash(runs, tmp_path):
    """`dlcli --install-completion bash` into a scratch home, then bash sources it and
    asks the real `dlcli` command for completions."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    bin_dir.mkdir()
    (bin_dir / "dlcli").write_text(f'#!/bin/sh\nexec {sys.executable} -m dlcli "$@"\n')
    (bin_dir / "dlcli").chmod(0o755)
    env = cli_env(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    installed = invoke("--install-completion", "bash", env=env)
    assert installed.returncode == 0, installed.stderr
    script = home / ".bash_completions" / "dlcli.sh"
    assert "_DLCLI_COMPLETE=complete_bash" in script.read_text() and str(script) in (home / ".bashrc").read_text()
    ask = f'source {script}; COMP_WORDS=(dlcli "$@"); COMP_CWORD=$(($# )); _dlcli_completion dlcli; ' \
          'printf "%s\\n" "${COMPREPLY[@]}"'

    def bash(*words: str) -> list[str]:
        result = subprocess.run(["bash", "-c", ask, "bash", *words], capture_output=True, text=True, env=env,
                                cwd=runs[0], timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert bash("tr") == ["train"]
    assert bash("eval", f"runs/{NAME}-") == [f"runs/{NAME}-2"]


def test_json_error_objects(tmp_path):
    """With --json a failure prints {"error", "exit_code"} on stdout, with the exit code
    and the one line on stderr it has without: bad input, a usage error, a NaN loss."""
    nan = sets(*TINY, "optimizer.learning_rate=1e30")  # Adam's steps of 1e30: the loss is NaN at once
    cases = [(["train", *sets("model.nme=3")], 2, "unknown config key 'model.nme'"),
             (["eval", str(tmp_path / "missing")], 2, str(tmp_path / "missing")),
             (["train", "--bogus"], 2, "No such option: --bogus; see dlcli train --help"),
             (["train", "--run-dir", str(tmp_path / "nan"), *nan], 1, "loss became nan")]
    for args, code, needle in cases:
        result = invoke(*args, "--json", cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        line = result.stderr.splitlines()[-1]
        assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": code}
        assert needle in line and result.stderr.count("error: ") == 1
        if code == 2:
            plain = invoke(*args, cwd=tmp_path)
            assert (plain.returncode, plain.stdout, plain.stderr) == (code, "", result.stderr)
