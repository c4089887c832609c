"""PNG plots, drawn with Matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np


def learning_curves(arms: dict[str, list[list[dict]]], metric: str, out: Path, title: str) -> None:
    """One line per arm: the mean of `metric` over its runs (each a list of metrics.jsonl
    records) at each logged step, with a band of plus and minus one standard deviation."""
    plt, fig, ax = _axes()
    for label, runs in arms.items():
        curves = [{r["step"]: r[metric] for r in records if metric in r} for records in runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0)
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    _save(plt, fig, ax, out, title, "step", metric, log_y=metric.endswith(("loss", "mae", "rmse")))


def gradient_flow_by_arm(arms: dict[str, list[list[dict]]], out: Path, title: str) -> None:
    """One line per arm: the geometric mean over its runs (metrics.jsonl records) of the
    last logged norms of d(loss)/d(h_t) against t. Nothing is drawn when no run logged them."""
    finals = {}
    for label, runs in arms.items():
        logged = [[r for r in records if "gradient_flow" in r] for records in runs]
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


def mode_scatter(points: np.ndarray, centres: np.ndarray, std: float, out: Path, title: str) -> None:
    """Generated (N, 2) points over the mixture's mode centres, each ringed at 3 standard
    deviations (inside the ring a sample counts as high quality)."""
    plt, fig, ax = _axes()
    fig.set_size_inches(5.5, 5.5)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, label="generated")
    ax.scatter(centres[:, 0], centres[:, 1], s=12, marker="x", color="black", label="mode centre")
    for x, y in centres:
        ax.add_patch(plt.Circle((x, y), 3 * std, fill=False, color="red", linewidth=0.6))
    span = np.abs(centres).max() * 1.4 + 10 * std
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    _save(plt, fig, ax, out, title, "x1", "x2", log_y=False, legend_size=7)


def metric_against(values: list, metrics: list[float], out: Path, title: str, key: str, metric: str, *,
                   categories: list[str] | None = None, log_x: bool = False) -> None:
    """One point per finished trial: `metric` against the value of the searched `key`.
    With `categories` (the labels of a categorical key, in order), `values` are their
    labels and the x axis lists them; else `values` are numbers, on a log axis if `log_x`."""
    plt, fig, ax = _axes(SMALL)
    if categories is not None:
        positions = {label: i for i, label in enumerate(categories)}
        ax.scatter([positions[v] for v in values], metrics, alpha=0.7, label="finished trial")
        ax.set_xticks(range(len(categories)), categories, rotation=20 if len(categories) > 6 else 0)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    else:
        ax.scatter(values, metrics, alpha=0.7, label="finished trial")
        if log_x:
            ax.set_xscale("log")
    _save(plt, fig, ax, out, title, key, metric, log_y=False, legend_size=8)


def trial_history(trials: list[int], metrics: list[float], out: Path, title: str, metric: str, *,
                  higher_is_better: bool) -> None:
    """`metric` of each finished trial against its number, in the order of the trials,
    with the best value so far as a step line."""
    plt, fig, ax = _axes(SMALL)
    best = np.maximum.accumulate(metrics) if higher_is_better else np.minimum.accumulate(metrics)
    ax.scatter(trials, metrics, alpha=0.7, label="trial")
    ax.step(trials, best, where="post", color="C1", label="best so far")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _save(plt, fig, ax, out, title, "trial", metric, log_y=False, legend_size=8)


def _pyplot():
    """pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SMALL = {"figsize": (4.8, 3.4), "dpi": 100}  # a report's many small plots: two side by side on a page


def _axes(size: dict | None = None):
    """pyplot, a new figure (7 x 4.5 inches at 120 dpi, or `size`) and its axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(**(size or {"figsize": (7, 4.5), "dpi": 120}))
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
    _write(fig, out)
    plt.close(fig)


def _write(fig, out: Path) -> None:
    """`fig` as the PNG `out`, replaced at once: a report inlining it, or a second sweep
    process drawing it too, never reads a part."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.{socket.gethostname()}.{os.getpid()}")
    fig.savefig(partial, format="png")
    os.replace(partial, out)


def image_grid(rows: list[np.ndarray], out: Path, labels: list[str] | None = None, title: str | None = None) -> None:
    """Rows of images (each (n, H, W, C) in [0, 1]), one row per array, into one PNG;
    `labels` name the rows on the left. The images are tiled into one array with white
    gaps and drawn by one `imshow` (a subplot per image takes seconds for a 64-image grid)."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    height, width = rows[0].shape[1:3]
    gap = max(1, height // 14)
    canvas = np.ones((n_rows * (height + gap) + gap, n_cols * (width + gap) + gap))
    for i, images in enumerate(rows):
        for j, image in enumerate(images):
            top, left = gap + i * (height + gap), gap + j * (width + gap)
            canvas[top: top + height, left: left + width] = np.clip(image[..., 0], 0, 1)
    fig, ax = plt.subplots(figsize=(0.9 * n_cols + (1.2 if labels else 0), 0.9 * n_rows + 0.4), dpi=100)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([gap + i * (height + gap) + height / 2 for i in range(n_rows)] if labels else [])
    if labels:
        ax.set_yticklabels(labels, fontsize=9)
        ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _write(fig, out)
    plt.close(fig)


def square_grid(images: np.ndarray, out: Path, title: str | None = None) -> None:
    """(n, H, W, C) images in [0, 1] tiled into a near-square PNG."""
    columns = int(np.ceil(np.sqrt(len(images))))
    image_grid([images[i: i + columns] for i in range(0, len(images), columns)], out, title=title)


def code_scatter(points: np.ndarray, labels: np.ndarray, out: Path, title: str, axis_names: tuple[str, str]) -> None:
    """(N, 2) points coloured by integer label, one legend entry per label."""
    plt, fig, ax = _axes()
    fig.set_size_inches(6.5, 5.5)
    for label in np.unique(labels):
        chosen = labels == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=3, alpha=0.6, label=str(label))
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=8, loc="best")
    fig.tight_layout()
    _write(fig, out)
    plt.close(fig)


def score_histogram(groups: dict[str, np.ndarray], out: Path, title: str, xlabel: str) -> None:
    """Overlaid histograms of scores, one per named group, on shared logarithmic bins;
    each bar is the share of its group in the bin, so groups of any size compare."""
    plt, fig, ax = _axes()
    values = np.concatenate(list(groups.values()))
    bins = np.geomspace(max(values.min(), 1e-6), values.max(), 60)
    for name, scores in groups.items():
        ax.hist(np.maximum(scores, 1e-6), bins=bins, weights=np.full(len(scores), 1 / len(scores)), alpha=0.5,
                label=f"{name} ({len(scores):,})")
    ax.set_xscale("log")
    _save(plt, fig, ax, out, title, xlabel, "share of the group", log_y=False)
