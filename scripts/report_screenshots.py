"""Regenerate the README's screenshots of the two report kinds, docs/compare-report.png
and docs/sweep-report.png: a real `dlcli compare` (a shallow and a deep variant of the
digits MLP, by --arm, over 3 seeds) and a real `dlcli sweep` (8 random trials over the
learning rate, the activation and the width), each report.html opened in headless
Chromium (tests/browser.py: Debian's `chromium`, the dev extra's websocket-client) and
captured whole, the compare in the light colour scheme and the sweep in the dark one.
About two minutes on 2 CPU cores.

    .venv/bin/python scripts/report_screenshots.py [--work DIR] [--docs docs]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser import IMAGES_JS, Browser, chromium  # noqa: E402

STEPS = ["training.steps=400", "training.eval_every=40"]


def dlcli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dlcli", *args], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the comparison and the sweep (default: a temporary one)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    if chromium() is None:
        sys.exit("no chromium installed; apt-get install --no-install-recommends chromium")
    work = (args.work or Path(tempfile.mkdtemp(prefix="dlcli-screenshots-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)

    experiment = str(REPO / "experiments" / "mlp_digits.yaml")
    dlcli("compare", experiment, "--arm", "shallow:model.depth=1", "--arm", "deep:model.depth=4,model.width=64",
          *(part for item in STEPS for part in ("--set", item)), "--seeds", "3", "--workers", "2",
          "--out", str(work / "compare"))
    (work / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "mlp-digits-search", "base": experiment, "strategy": "random", "trials": 8, "seed": 0,
        "metric": "val/accuracy", "direction": "max", "workers": 2, "set": STEPS,
        "space": {"optimizer.learning_rate": {"distribution": "log_uniform", "low": 1e-4, "high": 3e-2},
                  "model.activation": ["relu", "tanh", "gelu"],
                  "model.width": {"distribution": "int_uniform", "low": 16, "high": 256}}}))
    dlcli("sweep", str(work / "sweep.yaml"), "--out", str(work / "sweep"))

    args.docs.mkdir(parents=True, exist_ok=True)
    with Browser(chromium()) as browser:
        for kind, dark in (("compare", False), ("sweep", True)):
            load = browser.open((work / kind / "report.html").as_uri())
            broken = [i for i in browser.evaluate(IMAGES_JS) if i["error"] or not i["width"]]
            if load.errors or broken:
                sys.exit(f"{kind} report: {load.errors} {broken}")
            browser.screenshot(args.docs / f"{kind}-report.png", dark=dark)
            print(args.docs / f"{kind}-report.png")


if __name__ == "__main__":
    main()
