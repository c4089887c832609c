"""Comparisons over seeds: `dlcli compare shallow-vs-deep`, `dlcli compare CONFIG CONFIG ...`
and `dlcli compare CONFIG --arm NAME:KEY=VALUE,... --arm ...` (variants of one config).

Each arm of a comparison is one experiment config; every arm runs with the same seeds
(as ordinary run folders, through `dlcli.batch`), and the test metric is summarised
per arm as a mean with a 95% confidence interval. Shallow-vs-deep builds its arms
itself: MLPs (or CNNs) of several depths whose widths are solved so that every
parameter count is within 2% of one budget, trained with the same optimizer, schedule
and step budget; `tune_lr` first picks each arm's learning rate on the validation split. The outcome is
written as results.json/.csv, plots, and one report as report.md and a self-contained
report.html (`dlcli.report`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from dlcli.batch import Job, JobPool, JobResult
from dlcli.config import ExperimentConfig, check_metric, config_from_dict, load_config
from dlcli.errors import BadInput
from dlcli.files import FolderLock, write_atomically
from dlcli.report import Report
from dlcli.runs import RunDir
from dlcli.schema import to_dict
from dlcli.specs.cnn import ConvBlock
from dlcli.specs.tasks import TASK_KINDS, higher_is_better
from dlcli.stats import Summary, WelchTest, summarize, welch_t_test

BUDGET_TOLERANCE = 0.02


@dataclasses.dataclass
class Arm:
    label: str
    config: dict  # resolved experiment config (seed and learning rate filled in per job)
    depth: int | None = None
    width: str = ""


@dataclasses.dataclass(frozen=True)
class TaskPreset:
    """Defaults of a built-in shallow-vs-deep task."""

    data: dict
    budget: int
    steps: int
    learning_rate: float
    batch_size: int = 128
    overrides: tuple[str, ...] = ()


TASKS = {
    # Layer norm keeps deep ReLU stacks trainable on the sawtooth; without it, some seeds
    # of every deep network stay at the constant fit and the comparison measures luck.
    "sawtooth": TaskPreset({"name": "sawtooth", "folds": 4}, budget=1000, steps=20000, learning_rate=3e-3,
                           overrides=("model.norm=layer",)),
    "parity": TaskPreset({"name": "parity", "bits": 8}, budget=2000, steps=3000, learning_rate=3e-3),
    "spirals": TaskPreset({"name": "spirals", "turns": 2.0}, budget=1000, steps=3000, learning_rate=3e-3),
    "digits": TaskPreset({"name": "digits"}, budget=20000, steps=1500, learning_rate=1e-3),
    "mnist": TaskPreset({"name": "mnist"}, budget=100000, steps=3000, learning_rate=1e-3),
}


# ----- planning ------------------------------------------------------------------------

def solve_widths(cfg: ExperimentConfig, depth: int, budget: int) -> tuple[dict, int]:
    """The model section with `depth` hidden layers (MLP) or conv blocks (CNN) whose
    parameter count is within 2% of `budget`: every layer one width except the last,
    which is solved for (the count is linear in it); among the fits, the most uniform
    network wins. Returns (model section, parameter count)."""
    info = cfg.info

    def count(width: int, last: int) -> int:
        return _shaped(cfg, depth, width, last).param_count(info)

    fits, closest = [], None
    for width in range(1, 100_000):
        if count(width, 1 if depth > 1 else width) > budget * (1 + BUDGET_TOLERANCE):
            break
        if depth == 1:
            lasts = [width]
        else:
            slope = count(width, 2) - count(width, 1)
            guess = round((budget - count(width, 1)) / slope) + 1
            lasts = [last for last in (guess - 1, guess, guess + 1) if 1 <= last <= 2 * width]
        for last in lasts:
            params = count(width, last)
            gap = abs(params - budget) / budget
            closest = min(closest or (gap, params), (gap, params))
            if gap <= BUDGET_TOLERANCE:
                fits.append((abs(last - width) / width, gap, width, last, params))
    if not fits:
        near = f" (closest: {closest[1]:,})" if closest else ""
        raise BadInput(f"a parameter budget of {budget:,} cannot fit a depth-{depth} {cfg.model.name} within 2%{near}; "
                       "raise --budget or use smaller depths")
    _, _, width, last, params = min(fits)
    return to_dict(_shaped(cfg, depth, width, last)), params


def _shaped(cfg: ExperimentConfig, depth: int, width: int, last: int):
    """cfg.model with `depth` layers of `width` units (channels), the last one `last`."""
    sizes = [width] * (depth - 1) + [last]
    if cfg.model.name == "mlp":
        return dataclasses.replace(cfg.model, widths=sizes, depth=depth)
    blocks = [ConvBlock(channels=c, kernel=3, pool="max" if i < 2 else "none") for i, c in enumerate(sizes)]
    return dataclasses.replace(cfg.model, blocks=blocks, head="gap", dense=[])


def shallow_vs_deep_arms(task: str, *, model: str, budget: int | None, depths: list[int], steps: int | None,
                         activation: str, learning_rate: float | None, overrides: list[str]) -> list[Arm]:
    """One arm per depth, on a built-in task or any dataset name."""
    if model not in ("mlp", "cnn"):
        raise BadInput(f"--model must be mlp or cnn, got {model!r}")
    if not depths or any(d < 1 for d in depths):
        raise BadInput(f"--depths must be positive integers such as 1,2,4,8, got {depths}")
    preset = TASKS.get(task) or TaskPreset({"name": task}, budget=20000, steps=2000, learning_rate=1e-3)
    steps = steps or preset.steps
    eval_every = max(steps // 20, 1)  # about 20 points on each learning curve
    evaluations = -(-steps // eval_every)
    base = [f"model.name={model}", f"model.activation={activation}", f"data={json.dumps(preset.data)}",
            f"training.steps={steps}", f"training.eval_every={eval_every}", f"training.batch_size={preset.batch_size}",
            f"checkpoint.every={evaluations}",  # the final and the best state reach the disk, not 20 of them
            f"optimizer.learning_rate={learning_rate or preset.learning_rate}", "optimizer.name=adam",
            "schedule.name=warmup_cosine", "schedule.warmup_steps=100", *preset.overrides, *overrides]
    cfg = load_config(None, base)
    cfg_dict = cfg.to_dict() | {"name": f"{task}-{model}"}
    arms = []
    for depth in sorted(set(depths)):
        section, params = solve_widths(cfg, depth, budget or preset.budget)
        sizes = section["widths"] if model == "mlp" else [b["channels"] for b in section["blocks"]]
        arms.append(Arm(f"depth {depth}", {**cfg_dict, "model": section}, depth, "x".join(map(str, sizes))))
    return arms


def config_arms(paths: list[Path], overrides: list[str]) -> list[Arm]:
    if len(paths) < 2:
        raise BadInput("dlcli compare needs at least two CONFIG files (or one CONFIG with an --arm per variant, "
                       "or the shallow-vs-deep subcommand)")
    arms = [Arm(Path(p).stem, load_config(p, overrides).to_dict()) for p in paths]
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise BadInput(f"the configs share a name ({', '.join(labels)}); give each file its own name")
    return arms


ARM_FORM = "NAME:KEY=VALUE[,KEY=VALUE...], e.g. --arm deep:model.depth=4,model.width=64"


def variant_arms(path: Path, variants: list[str], overrides: list[str]) -> list[Arm]:
    """One arm per `--arm NAME:KEY=VALUE,...` of the one config file at `path`: the file,
    then `overrides` (every arm's --set), then the arm's own, as `dlcli train --set` reads them."""
    parsed = [parse_arm(text) for text in variants]
    if len(parsed) < 2:
        raise BadInput(f"dlcli compare needs at least two --arm options, each {ARM_FORM}")
    folders: dict[str, str] = {}
    for name, _ in parsed:
        other = folders.get(slug(name))
        if other == name:
            raise BadInput(f"--arm {name!r} is given twice; give each arm its own name")
        if other is not None:
            raise BadInput(f"arms {other!r} and {name!r} name the same run folders ({slug(name)}-seedN); "
                           "give each arm its own name")
        folders[slug(name)] = name
    arms = []
    for name, sets in parsed:
        try:
            config = load_config(path, [*overrides, *sets]).to_dict()
        except BadInput as err:
            raise BadInput(f"--arm {name}: {err}") from None
        arms.append(Arm(name, config | {"name": f"{config['name']}-{slug(name)}"}))
    return arms


def parse_arm(text: str) -> tuple[str, list[str]]:
    """'deep:model.depth=4,model.widths=[64,32]' -> ('deep', ['model.depth=4', 'model.widths=[64,32]']).
    Overrides are separated by commas outside brackets, braces and quotes; a bare NAME
    (or NAME:) is the config unchanged. `BadInput` for a malformed arm."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name or "=" in name:
        raise BadInput(f"--arm {text!r} is not of the form {ARM_FORM}")
    if "/" in name or not slug(name):
        raise BadInput(f"--arm {text!r}: the arm name {name!r} names a folder, so it needs a letter or digit and "
                       "no '/'; choose another name")
    overrides = _split_top_level(rest) if rest.strip() else []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not item:
            raise BadInput(f"--arm {text!r} has an empty override (a stray comma); give {ARM_FORM}")
        if not sep or not key.strip():
            raise BadInput(f"--arm {name}: {item!r} is not KEY=VALUE; give {ARM_FORM}")
    return name, overrides


def _split_top_level(text: str) -> list[str]:
    """`text` split at the commas outside [...], {...} and quotes, each part stripped."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


# ----- running -------------------------------------------------------------------------

@dataclasses.dataclass
class ArmResult:
    arm: Arm
    params: int
    learning_rate: float
    values: list[float]  # the metric per seed
    summary: Summary
    train_s: float
    seeds: list[dict]  # per-seed rows for results.json / .csv
    run_dirs: list[Path]
    extra: dict[str, Summary] = dataclasses.field(default_factory=dict)  # 'shift4:test/accuracy' -> summary


@dataclasses.dataclass
class Comparison:
    metric: str
    higher_is_better: bool
    arms: list[ArmResult]
    test: WelchTest | None
    pair: tuple[str, str] | None  # (challenger, baseline) of the test
    conclusion: str
    failures: list[JobResult]


def run_comparison(arms: list[Arm], *, out_dir: Path, seeds: int, metric: str | None, workers: int, data_dir: Path,
                   tune_lr: list[float] | None = None, extra_evals: dict[str, list[str]] | None = None,
                   baseline: str | None = None, on_done: Callable[[JobResult], None] = lambda r: None) -> Comparison:
    if seeds < 1:
        raise BadInput(f"--seeds must be at least 1, got {seeds}")
    configs = [config_from_dict(a.config) for a in arms]
    kinds = {c.task_kind for c in configs}
    if len(kinds) > 1:
        raise BadInput(f"the configs mix task kinds ({', '.join(sorted(kinds))}); compare like with like")
    if metric is None:  # the kind's (accuracy for classifiers, a GAN's first metric: its data decides which)
        metric = f"test/{TASK_KINDS.get(configs[0].task_kind).compare_metric or configs[0].metric_names[0]}"
    for cfg in configs:
        check_metric(metric, cfg, "--metric", tuple(extra_evals or ()))
    # one comparison writes a folder at a time; the same workers tune and train
    with FolderLock(out_dir, "comparison folder"), JobPool(workers=workers, data_dir=data_dir) as pool:
        if tune_lr:
            arms = _tune_learning_rates(arms, tune_lr, out_dir, pool, on_done)
        jobs = [Job(f"{slug(a.label)}-seed{s}", {**a.config, "seed": s}, out_dir / "runs" / f"{slug(a.label)}-seed{s}",
                    dict(extra_evals or {})) for a in arms for s in range(seeds)]
        results = {r.key: r for r in pool.run(jobs, on_done)}
    failures = [r for r in results.values() if r.status == "failed"]
    if failures:
        return Comparison(metric, higher_is_better(metric), [], None, None,
                          f"{len(failures)} of {len(jobs)} runs failed; see the errors above, fix them and rerun", failures)
    arm_results = []
    for arm in arms:
        arm_jobs = [j for j in jobs if j.key.startswith(slug(arm.label) + "-seed")]
        rows = [_row(results[j.key], s, metric) for s, j in enumerate(arm_jobs)]
        values = [row[metric] for row in rows]
        first = results[arm_jobs[0].key].summary
        extra = {f"{name}:{metric.split(':')[-1]}": summarize([row[f"{name}:{metric.split(':')[-1]}"] for row in rows])
                 for name in (extra_evals or {})}
        arm_results.append(ArmResult(arm, first["params"], arm.config["optimizer"]["learning_rate"], values,
                                     summarize(values), sum(r["wall_s"] for r in rows) / len(rows), rows,
                                     [j.run_dir for j in arm_jobs], {k: v for k, v in extra.items() if k != metric}))
    return _conclude(metric, arm_results, baseline)


def _tune_learning_rates(arms, grid, out_dir, pool: JobPool, on_done) -> list[Arm]:
    """Each arm's learning rate: the best validation metric over `grid`, seed 0."""
    jobs = [Job(f"{slug(a.label)}-lr{lr:g}", _with_lr({**a.config, "seed": 0}, lr),
                out_dir / "tune" / f"{slug(a.label)}-lr{lr:g}") for a in arms for lr in grid]
    results = {r.key: r for r in pool.run(jobs, on_done)}
    tuned = []
    for arm in arms:
        cfg = config_from_dict(arm.config)
        scores = {}
        for lr in grid:
            result = results[f"{slug(arm.label)}-lr{lr:g}"]
            if result.status == "done":
                scores[lr] = result.summary["best_value"]
        if not scores:
            raise BadInput(f"every learning rate in the --tune-lr grid failed for {arm.label}; try smaller rates")
        pick = (max if cfg.monitor_mode == "max" else min)(scores, key=scores.get)
        tuned.append(dataclasses.replace(arm, config=_with_lr(arm.config, pick)))
    return tuned


def _with_lr(config: dict, lr: float) -> dict:
    config = copy.deepcopy(config)
    config["optimizer"]["learning_rate"] = lr
    return config


def _row(result: JobResult, seed: int, metric: str) -> dict:
    metrics = dict(result.summary["metrics"])
    for name, values in result.extra.items():
        metrics.update({f"{name}:{k}": v for k, v in values.items()})
    return {"seed": seed, "run_dir": result.summary["run_dir"], "params": result.summary["params"],
            "wall_s": result.summary["wall_s"], **{k: v for k, v in metrics.items() if isinstance(v, float)},
            metric: metrics[metric]}


def _conclude(metric: str, arms: list[ArmResult], baseline: str | None) -> Comparison:
    """Welch's t-test of the best other arm against the baseline, and the sentence saying how it came out."""
    higher = higher_is_better(metric)
    base = next((a for a in arms if a.arm.label == baseline), arms[0])
    others = [a for a in arms if a is not base]
    best = (max if higher else min)(others, key=lambda a: a.summary.mean)
    test = welch_t_test(best.values, base.values) if len(best.values) > 1 else None
    better = best.summary.mean > base.summary.mean if higher else best.summary.mean < base.summary.mean
    figures = (f"{metric} {best.summary.mean:.4g} ± {format_ci(best.summary)} ({best.params:,} parameters) against "
               f"{base.summary.mean:.4g} ± {format_ci(base.summary)} ({base.params:,} parameters) over {len(base.values)} seeds")
    if test is None:
        verdict = f"{best.arm.label} {'beats' if better else 'does not beat'} {base.arm.label}: {figures} (one seed, no test)"
    elif test.p < 0.05:
        verdict = (f"{best.arm.label} {'beats' if better else 'is worse than'} {base.arm.label}: {figures}; "
                   f"Welch's t = {test.t:.2f}, p = {test.p:.2g}")
    else:
        verdict = (f"{best.arm.label} and {base.arm.label} do not differ significantly (5% level): {figures}; "
                   f"Welch's t = {test.t:.2f}, p = {test.p:.2g}")
    return Comparison(metric, higher, arms, test, (best.arm.label, base.arm.label), verdict + ".", [])


def format_ci(summary: Summary) -> str:
    return "n/a" if math.isnan(summary.half_width) else f"{summary.half_width:.2g}"


def slug(label: str) -> str:
    """An arm's label as a folder name: characters other than letters, digits, '-', '_', '.' become '-'."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-")


# ----- reporting -----------------------------------------------------------------------

def write_outputs(comparison: Comparison, out_dir: Path, title: str) -> dict:
    """results.json, results.csv, curves.png (gradient_flow.png for recurrent runs that
    log it), report.md and report.html in `out_dir`; returns the JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = to_json(comparison, out_dir)
    write_atomically(out_dir / "results.json", json.dumps(data, indent=2))
    rows = [{"arm": a.arm.label, **row} for a in comparison.arms for row in a.seeds]
    extra = list(comparison.arms[0].extra)
    columns = ["arm", "seed", "params", comparison.metric, *extra, "wall_s", "run_dir"]
    lines = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in rows]
    write_atomically(out_dir / "results.csv", "\n".join(lines) + "\n")
    from dlcli.plots import gradient_flow_by_arm, learning_curves

    val_metric = "val/" + comparison.metric.split("/")[-1]
    records = {a.arm.label: [RunDir(d).metrics() for d in a.run_dirs] for a in comparison.arms}
    learning_curves(records, val_metric, out_dir / "curves.png", title)
    (out_dir / "gradient_flow.png").unlink(missing_ok=True)  # a rerun with other arms draws it afresh or not at all
    gradient_flow_by_arm(records, out_dir / "gradient_flow.png", title)
    _report(comparison, title, out_dir, val_metric).write(out_dir)
    return data


def to_json(comparison: Comparison, out_dir: Path) -> dict:
    return {
        "out_dir": str(out_dir), "metric": comparison.metric, "higher_is_better": comparison.higher_is_better,
        "arms": [{"label": a.arm.label, "depth": a.arm.depth, "widths": a.arm.width, "params": a.params,
                  "learning_rate": a.learning_rate, "mean": a.summary.mean, "std": a.summary.std,
                  "ci95": None if math.isnan(a.summary.half_width) else a.summary.half_width,
                  "values": a.values, "train_s": a.train_s,
                  "extra": {name: {"mean": x.mean, "ci95": None if math.isnan(x.half_width) else x.half_width}
                            for name, x in a.extra.items()}} for a in comparison.arms],
        "test": None if comparison.test is None else {
            "challenger": comparison.pair[0], "baseline": comparison.pair[1], "t": comparison.test.t,
            "df": comparison.test.df, "p": comparison.test.p},
        "conclusion": comparison.conclusion,
        "failures": [{"run": f.key, "error": f.error} for f in comparison.failures],
    }


def _report(comparison: Comparison, title: str, out_dir: Path, val_metric: str) -> Report:
    """The conclusion, the arms' table, what differs between their configs, every seed's
    figures and the plots: report.md and report.html."""
    metric, extra = comparison.metric, list(comparison.arms[0].extra)
    report = Report(title)
    report.paragraph(comparison.conclusion)
    numbers = {"parameters", "learning rate", f"{metric} (mean ± 95% CI)", *extra, "train time (s)"}
    widths = any(a.arm.width for a in comparison.arms)  # shallow-vs-deep's solved widths
    report.table(["arm", *(["widths"] if widths else []), "parameters", "learning rate", f"{metric} (mean ± 95% CI)",
                  *extra, "train time (s)"],
                 [[a.arm.label, *([a.arm.width] if widths else []), f"{a.params:,}", f"{a.learning_rate:g}",
                   f"{a.summary.mean:.4f} ± {format_ci(a.summary)}", *(f"{x.mean:.4f} ± {format_ci(x)}" for x in a.extra.values()),
                   f"{a.train_s:.1f}"] for a in comparison.arms], numeric=numbers)
    differences = _differences([a.arm for a in comparison.arms])
    if differences:
        report.heading("What differs between the arms")
        report.table(["config key", *(a.arm.label for a in comparison.arms)],
                     [[key, *values] for key, values in differences.items()])
    report.heading("Every seed")
    report.table(["arm", "seed", metric, *extra, "wall time (s)", "run folder"],
                 [[a.arm.label, str(row["seed"]), f"{row[metric]:.4f}", *(f"{row[name]:.4f}" for name in extra),
                   f"{row['wall_s']:.1f}", _relative(row["run_dir"], out_dir)] for a in comparison.arms for row in a.seeds],
                 numeric={"seed", metric, *extra, "wall time (s)"})
    report.heading("Plots")
    report.figure("curves.png", f"Learning curves: {val_metric}, mean over the seeds with a band of ±1 standard deviation")
    if (out_dir / "gradient_flow.png").exists():
        report.figure("gradient_flow.png", "Recurrent runs with training.gradient_flow: the last logged norms of "
                                           "d(loss)/d(h_t), geometric mean over the seeds")
    report.paragraph("Per-seed results: results.csv; everything above as JSON: results.json.")
    return report


def _differences(arms: list[Arm]) -> dict[str, list[str]]:
    """Each dotted config key (name and seed aside) whose value is not the same in every
    arm: key -> its value in each arm, as text ('-' where an arm has no such key)."""
    flat = [_flatten(a.config) for a in arms]
    keys = sorted({k for f in flat for k in f} - {"name", "seed"})
    return {key: [_shown(f[key]) if key in f else "-" for f in flat] for key in keys
            if len({json.dumps(f.get(key), sort_keys=True) for f in flat}) > 1 or any(key not in f for f in flat)}


def _flatten(config: dict, prefix: str = "") -> dict:
    """{'model': {'depth': 2}} -> {'model.depth': 2}; lists (of values or sections) stay whole."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _relative(path: str, folder: Path) -> str:
    """`path` relative to `folder` when inside it (the report travels with its folder)."""
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)
