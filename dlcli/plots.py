"""PNG plots, drawn with Matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcli.runlog import read_metrics


def learning_curves(arms: dict[str, list[Path]], metric: str, out: Path, title: str) -> None:
    """One line per arm: the mean of `metric` over its runs at each logged step, with a
    band of plus and minus one standard deviation."""
    plt, fig, ax = _axes()
    for label, run_dirs in arms.items():
        curves = [{r["step"]: r[metric] for r in read_metrics(d) if metric in r} for d in run_dirs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0)
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    _save(plt, fig, ax, out, title, "step", metric, log_y=metric.endswith(("loss", "mae", "rmse")))


def gradient_flow_by_arm(arms: dict[str, list[Path]], out: Path, title: str) -> None:
    """One line per arm: the geometric mean over its runs of the last logged norms of
    d(loss)/d(h_t) against t. Nothing is drawn when no run logged them."""
    finals = {}
    for label, run_dirs in arms.items():
        logged = [[r for r in read_metrics(d) if "gradient_flow" in r] for d in run_dirs]
        norms = [np.maximum(np.asarray(records[-1]["gradient_flow"]), 1e-30) for records in logged if records]
        if norms and len({len(n) for n in norms}) == 1:
            finals[label] = np.exp(np.mean(np.log(norms), axis=0))
    if not finals:
        return
    plt, fig, ax = _axes()
    for label, norms in finals.items():
        ax.plot(np.arange(1, len(norms) + 1), norms, label=label)
    _save(plt, fig, ax, out, title, "time step t", "||d loss / d h_t|| at the end of training", log_y=True)


def gradient_flow(records: list[dict], out: Path, title: str) -> None:
    """One line per logged evaluation (at most 8, evenly spaced): the norm of
    d(loss)/d(h_t) against t, on a log scale, coloured from early (light) to late (dark)
    in training. A norm that underflowed to 0 is drawn at 1e-30."""
    plt, fig, ax = _axes()
    shown = records if len(records) <= 8 else [records[round(i * (len(records) - 1) / 7)] for i in range(8)]
    colours = plt.cm.viridis(np.linspace(0.9, 0.0, len(shown)))
    for record, colour in zip(shown, colours):
        norms = np.maximum(np.asarray(record["gradient_flow"]), 1e-30)
        ax.plot(np.arange(1, len(norms) + 1), norms, color=colour, label=f"step {record['step']}")
    _save(plt, fig, ax, out, title, "time step t", "||d loss / d h_t||  (0 drawn at 1e-30)", log_y=True, legend_size=7)


def _axes():
    """pyplot on the Agg backend (no display needed), a new figure and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    return plt, fig, ax


def _save(plt, fig, ax, out: Path, title: str, xlabel: str, ylabel: str, *, log_y: bool, legend_size=None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
