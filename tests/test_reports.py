"""The HTML reports of `dlcli compare` and `dlcli sweep`, opened in a real headless
Chromium (tests/browser.py): they load with no console error and no failed or network
request, every image decodes, the tables hold the runs' own numbers, user strings are
escaped; and `dlcli compare CONFIG --arm NAME:KEY=VALUE,...` (variants of one config)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from browser import IMAGES_JS, TABLES_JS, Browser, chromium
from conftest import TINY, invoke

ODD_ARM = "narrow<i>&"  # an arm name a page would misread unless it is escaped


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        pytest.skip("no chromium installed (Debian: apt-get install --no-install-recommends chromium; .ci/run does)")
    with Browser(executable) as opened:
        yield opened


def _compare(folder: Path) -> Path:
    """Two variants of one tiny digits MLP (width 8, depth 2; width 16, depth 1) over two
    seeds, by --arm; the comparison's folder."""
    (folder / "tiny.yaml").write_text(yaml.safe_dump({"training": {"steps": 4, "eval_every": 2, "batch_size": 32}}))
    invoke("compare", str(folder / "tiny.yaml"), "--arm", f"{ODD_ARM}:model.width=8",
           "--arm", "wide:model.width=16,model.depth=1", "--seeds", "2", "--workers", "1",
           "--out", str(folder / "out"), "--json", check=True)
    return folder / "out"


def _sweep(folder: Path) -> Path:
    """Two random trials over a log-uniform learning rate and a categorical activation; the sweep's folder."""
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "s<b>&", "strategy": "random", "trials": 2, "metric": "val/accuracy", "direction": "max",
        "set": [*TINY, "model.width=8"],
        "space": {"optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4, "high": 1e-1},
                  "model.activation": ["relu", "tanh"]}}))
    invoke("sweep", str(folder / "sweep.yaml"), "--workers", "1", "--out", str(folder / "out"), "--json", check=True)
    return folder / "out"


def _open_clean(browser: Browser, page: Path) -> None:
    """Load `page`: no error of any kind, nothing requested but the page and inline images."""
    load = browser.open(page.as_uri())
    assert load.errors == []
    assert load.requests[0] == page.as_uri()
    assert all(url.startswith("data:image/png;base64,") for url in load.requests[1:])


def _decoded_images(browser: Browser, folder: Path, files: list[str]) -> None:
    """The page's images are `files` of `folder`, each decoded at its PNG's own size."""
    images = browser.evaluate(IMAGES_JS)
    assert len(images) == len(files)
    for image, name in zip(images, files):
        width, height = struct.unpack(">II", (folder / name).read_bytes()[16:24])
        assert image["error"] is None and image["complete"]
        assert (image["width"], image["height"]) == (width, height) and width > 0


def _table(browser: Browser, first_header: str, index: int = 0) -> list[dict]:
    """The rows (column -> cell text) of the page's `index`th table whose first column is `first_header`."""
    rows = [t for t in browser.evaluate(TABLES_JS) if t[0][0] == first_header][index]
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def _check_dark_scheme(browser: Browser, page: Path) -> None:
    """The page's background and text follow the reader's light or dark colour scheme."""
    browser.open(page.as_uri())
    colours = {}
    for scheme in ("light", "dark"):
        browser.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": scheme}])
        colours[scheme] = browser.evaluate("[getComputedStyle(document.documentElement).backgroundColor, "
                                           "getComputedStyle(document.body).color]")
    browser.call("Emulation.setEmulatedMedia", features=[])
    assert colours["light"] == ["rgb(255, 255, 255)", "rgb(29, 32, 38)"]
    assert colours["dark"] == ["rgb(21, 24, 29)", "rgb(228, 231, 236)"]


def _check_arm_configs(comparison: Path) -> None:
    """Each arm's runs are the config with the arm's own overrides, one per seed."""
    for slug, width, depth in (("narrow-i", 8, 2), ("wide", 16, 1)):
        for seed in (0, 1):
            config = yaml.safe_load((comparison / "runs" / f"{slug}-seed{seed}" / "config.yaml").read_text())
            assert (config["model"]["width"], config["model"]["depth"], config["seed"]) == (width, depth, seed)
            assert config["training"]["steps"] == 4 and config["name"] == f"tiny-{slug}"


def test_the_checker_sees_console_errors_failed_requests_and_broken_images(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><img src="data:image/png;base64,AAAA"><img src="missing.png">'
                    '<script>console.error("planted")</script>')
    load = browser.open(page.as_uri())
    assert "console: planted" in load.errors
    assert any("ERR_FILE_NOT_FOUND" in e for e in load.errors)
    assert (tmp_path / "missing.png").as_uri() in load.requests
    assert [(i["width"], i["error"] is not None) for i in browser.evaluate(IMAGES_JS)] == [(0, True), (0, True)]


@pytest.mark.e2e
def test_compare_of_arms_writes_a_report_that_opens_offline_with_the_runs_numbers(browser, tmp_path):
    comparison = _compare(tmp_path)
    _check_arm_configs(comparison)
    _check_dark_scheme(browser, comparison / "report.html")
    page = comparison / "report.html"
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    _open_clean(browser, page)
    _decoded_images(browser, comparison, ["curves.png"])
    results = json.loads((comparison / "results.json").read_text())
    metric = results["metric"]
    body = browser.evaluate("document.body.innerText")
    assert results["conclusion"] in body
    seeds = _table(browser, "arm", 1)  # the arms' table, then every seed's
    assert len(seeds) == 4
    for row in seeds:
        summary = json.loads((comparison / row["run folder"] / "summary.json").read_text())
        assert float(row[metric]) == pytest.approx(summary["metrics"][metric], abs=5e-5)
    arms = _table(browser, "arm", 0)
    for row, arm in zip(arms, results["arms"]):
        assert row["arm"] == arm["label"] and float(row[f"{metric} (mean ± 95% CI)"].split(" ± ")[0]) == \
            pytest.approx(arm["mean"], abs=5e-5)
    assert _table(browser, "config key") == [{"config key": "model.depth", ODD_ARM: "2", "wide": "1"},
                                             {"config key": "model.width", ODD_ARM: "8", "wide": "16"}]
    # the odd arm name is text, never markup: in the title, the tables and the Markdown
    assert browser.evaluate("document.querySelectorAll('i').length") == 0
    assert ODD_ARM in browser.evaluate("document.querySelector('h1').textContent")
    assert "narrow&lt;i&gt;&amp;" in html
    assert f"| {ODD_ARM} | 0 | {seeds[0][metric]} |" in (comparison / "report.md").read_text()


@pytest.mark.e2e
def test_sweep_writes_plots_and_a_report_that_opens_offline_with_the_trials(browser, tmp_path):
    sweep = _sweep(tmp_path)
    page = sweep / "report.html"
    _open_clean(browser, page)
    keys = ["optimizer.learning_rate", "model.activation"]
    plots = ["history.png", *(f"vs-{key}.png" for key in keys)]
    _decoded_images(browser, sweep, plots)
    trials = _table(browser, "trial")
    assert len(trials) == 2 and all(row["status"] == "done" for row in trials)
    for row in trials:
        summary = json.loads((sweep / "trials" / f"trial-{row['trial']}" / "summary.json").read_text())
        assert float(row["val/accuracy"]) == pytest.approx(summary["metrics"]["val/accuracy"], abs=5e-5)
        config = yaml.safe_load((sweep / "trials" / f"trial-{row['trial']}" / "config.yaml").read_text())
        assert row["model.activation"] == config["model"]["activation"]
        assert float(row["optimizer.learning_rate"]) == pytest.approx(config["optimizer"]["learning_rate"], rel=1e-3)
    values = [float(row["val/accuracy"]) for row in trials]
    assert values == sorted(values, reverse=True)  # best first
    assert {row["key"]: row["axis"] for row in _table(browser, "key")} == {
        "optimizer.learning_rate": "log", "model.activation": "categories"}
    assert f"Best: trial {trials[0]['trial']}, val/accuracy = {trials[0]['val/accuracy']}" in \
        browser.evaluate("document.body.innerText")
    assert "sweep s<b>&" in browser.evaluate("document.querySelector('h1').textContent")
    markdown = (sweep / "report.md").read_text()
    assert all(f"![{name}]({name})" in markdown for name in plots)


@pytest.mark.parametrize("arms,message", [
    (["a:model.width=8"], "needs at least two --arm options"),
    (["a:model.width=8", "a:model.width=4"], "--arm 'a' is given twice"),
    (["a b:model.width=8", "a-b"], "arms 'a b' and 'a-b' name the same run folders"),
    (["a:model.dept=3", "b"], "--arm a: unknown config key 'model.dept' (did you mean 'model.depth'?)"),
    (["a=model.width=8", "b"], "--arm 'a=model.width=8' is not of the form NAME:KEY=VALUE"),
    (["a:model.width=8,", "b"], "has an empty override (a stray comma)"),
    (["a:model.width", "b"], "--arm a: 'model.width' is not KEY=VALUE"),
    (["a/b:model.width=8", "b"], "needs a letter or digit and no '/'"),
])
def test_bad_arms_are_one_line_errors(arms, message, tmp_path):
    (tmp_path / "x.yaml").write_text("model: {width: 8}\n")
    result = invoke("compare", str(tmp_path / "x.yaml"), *(part for arm in arms for part in ("--arm", arm)),
                    "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_arm_overrides_split_at_top_level_commas_only():
    from dlcli.compare import parse_arm

    assert parse_arm("deep: model.depth=4, model.widths=[64,32],data={name: digits, subset: 100},name='a,b'") == (
        "deep", ["model.depth=4", "model.widths=[64,32]", "data={name: digits, subset: 100}", "name='a,b'"])
    assert parse_arm("base") == ("base", [])
