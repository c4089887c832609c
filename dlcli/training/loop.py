"""`fit`: the training loop behind `dlcli train`.

Every input is checked before anything on disk changes: the run folder's state
(`--resume` / `--overwrite`), the config against a resumed run's, the data, the
checkpoint to resume from. Then the loop runs evaluation periods (one epoch, or
`training.eval_every` steps): compiled chunks of steps, one validation pass, a line in
metrics.jsonl and TensorBoard, a checkpoint when due (every `checkpoint.every`
evaluations once `checkpoint.min_interval_s` have passed since the last, on early
stopping and at the end), preceded by the best state since the previous one if it came
in between, and the early-stopping check. At the end the best
checkpoint is restored (`training.restore_best`) and measured on the test split.

Beside the metrics, TensorBoard gets the training metrics every `training.log_every`
steps (from the per-step values each chunk returns anyway), the test metrics and the
run's HParams session (`dlcli.runlog`); status.json follows the run from its start to
its end, whichever it is (`dlcli.runs.RunStatus`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import platform
import signal
import time
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

from dlcli import interrupts
from dlcli.checkpoint import RunCheckpoints, finished_steps, on_host
from dlcli.config import ExperimentConfig
from dlcli.console import TrainProgress, warn
from dlcli.data import num_examples
from dlcli.errors import BadInput, TrainingFailure, disk_full
from dlcli.files import FolderLock
from dlcli.runlog import MetricsLog
from dlcli.runs import RunDir, RunStatus
from dlcli.training.distributed import barrier, decided_by_process_0, outputs_folder, writes_outputs
from dlcli.training.experiment import EpochSampler, Experiment, build_experiment


@dataclasses.dataclass
class Bookkeeping:
    """Early-stopping state; saved in every checkpoint so a resumed run decides alike."""

    best_value: float | None = None
    best_step: int = 0
    evals_without_improvement: int = 0

    def update(self, value: float, step: int, mode: str, min_delta: float) -> bool:
        """Record an evaluation; True if it is the best so far."""
        better = self.best_value is None or (
            value < self.best_value - min_delta if mode == "min" else value > self.best_value + min_delta)
        if better:
            self.best_value, self.best_step, self.evals_without_improvement = value, step, 0
        else:
            self.evals_without_improvement += 1
        return better


def fit(cfg: ExperimentConfig, run_dir: Path, *, data_dir: Path, resume: bool = False,
        overwrite: bool = False, show_progress: bool = True) -> dict:
    """Train `cfg` into `run_dir` and return the run summary (also saved as summary.json).
    In a multi-process run every process calls this alike (`dlcli.training.distributed`)."""
    with interrupts.deferred():  # a signal stops the run at the next safe point (see `_stop`)
        return _fit(cfg, Path(run_dir), data_dir, resume, overwrite, show_progress)


def _fit(cfg: ExperimentConfig, run_dir: Path, data_dir: Path, resume: bool, overwrite: bool,
         show_progress: bool) -> dict:
    """Every check (changing nothing on disk), the restore of a resumed run, then, as
    the folder's one writer, its clearing and the training (`_fit_locked`)."""
    run = RunDir(run_dir)
    lock = FolderLock(run_dir, "run folder") if writes_outputs() else None
    if lock:
        lock.check_free()
    run.check_for_training(cfg, resume=resume, overwrite=overwrite)
    restart = run.stopped_before_first_checkpoint()
    if restart and writes_outputs():
        warn(f"{run_dir} holds a run stopped before its first checkpoint; starting it again from step 0")
    resume = resume and not restart
    exp = build_experiment(cfg, data_dir, run.references(cfg) if resume else None)
    exp.placement.check_batch(cfg.training.batch_size, "training.batch_size")
    barrier("checked")  # every process has read the folder before process 0 changes it
    book, step, period_so_far = Bookkeeping(), 0, None
    checkpoints = None
    if resume:
        checkpoints = run.checkpoints(cfg)
        try:
            restored_step, items, meta = checkpoints.restore_newest_readable(exp.checkpoint_items())
        except BadInput:
            checkpoints.close()
            raise
        exp.load_checkpoint_items(items)
        book = Bookkeeping(**meta["bookkeeping"])
        step = int(meta["step"])
        period_so_far = _chunk_from_json(meta.get("period_so_far"))
    if jax.process_count() == 1 and interrupts.received():
        if checkpoints:
            checkpoints.close()
        signum = interrupts.received()
        raise interrupts.Interrupted(signum, f"stopped by {interrupts.signal_name(signum)} before training started; "
                                             f"{run_dir} is as it was")
    try:
        if lock:  # every input is checked: from here on this process is the folder's one writer
            lock.acquire()
            run.check_for_training(cfg, resume=resume, overwrite=overwrite)  # as it is now that it is ours
            if (overwrite and not resume) or restart:
                run.clear()
            if resume:
                checkpoints.delete_newer_than(restored_step)  # unreadable: saved again as the run goes on
        barrier("cleared")
        return _fit_locked(exp, run_dir, checkpoints, book, step, period_so_far, resume, show_progress, data_dir)
    finally:
        if lock:
            lock.release()


def _fit_locked(exp: Experiment, run_dir: Path, checkpoints: RunCheckpoints | None, book: Bookkeeping, step: int,
                period_so_far: dict | None, resume: bool, show_progress: bool, data_dir: Path) -> dict:
    cfg, run = exp.cfg, RunDir(run_dir)
    with outputs_folder(run_dir) as outputs:
        outputs.mkdir(parents=True, exist_ok=True)
        written = RunDir(outputs)
        written.write_config(cfg)
        written.write_references(exp.references)
        written.write_preprocessing(exp.preprocessing)
        if exp.splits.info.vocab is not None:
            written.write_vocab(exp.splits.info.vocab)
        status = RunStatus(outputs, step=step, details={
            "model": cfg.model.name, "dataset": cfg.data.name, "params": exp.params, "monitor": cfg.monitor,
            "environment": environment(), "devices": exp.placement.describe()})
        try:
            summary = _train_logged(exp, outputs, checkpoints or run.checkpoints(cfg), status, book, step,
                                    period_so_far, resume, show_progress, data_dir)
        except BaseException as err:
            status.end(*_ending(err))
            raise
        status.end("finished", f"stopped early at step {summary['steps']}" if summary["stopped_early"] else None)
    return {**summary, "run_dir": str(run_dir)}


def _train_logged(exp: Experiment, outputs: Path, checkpoints: RunCheckpoints, status: RunStatus, book: Bookkeeping,
                  step: int, period_so_far: dict | None, resume: bool, show_progress: bool, data_dir: Path) -> dict:
    """`_train` with the metrics log open; a full disk ends it as one `TrainingFailure`."""
    log = MetricsLog(outputs, resume_step=step if resume else None, config=exp.cfg.to_dict())
    if log.dropped_lines:
        warn(f"{log.path}: dropped {log.dropped_lines} line(s) that were not metric records (a write cut short "
             f"by a kill); the log goes on from step {step}")
    full = None
    try:
        return _train(exp, outputs, checkpoints, log, status, book, step, period_so_far, show_progress, data_dir)
    except Exception as err:
        full = disk_full(err)
        if full is None:
            raise
    finally:
        checkpoints.close(quietly=full is not None)
        with contextlib.suppress(OSError) if full is not None else contextlib.nullcontext():
            log.close()
    kept = finished_steps(outputs)
    kept_text = f"the last good checkpoint (step {kept[-1]}) is kept" if kept else "no checkpoint was written"
    raise TrainingFailure(f"the disk holding {outputs} is full ({full}); stopped, {kept_text}; free some space, "
                          "then rerun the same command with --resume")


def _ending(err: BaseException) -> tuple[str, str]:
    """(state, reason) of a run that `err` ended: interrupted by a signal, else failed."""
    if isinstance(err, interrupts.Interrupted):
        return "interrupted", err.message or f"stopped by {err.signal_name}"
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", "stopped by Ctrl-C"
    message = " ".join(str(err).split())
    return "failed", message if isinstance(err, (TrainingFailure, BadInput)) else f"{type(err).__name__}: {message}"


def _train(exp: Experiment, run_dir: Path, checkpoints: RunCheckpoints, log: MetricsLog, status: RunStatus,
           book: Bookkeeping, step: int, period_so_far: dict | None, show_progress: bool, data_dir: Path) -> dict:
    """The evaluation periods from `step` on; `period_so_far`: the per-step metrics of
    the steps of the current period before `step` (a run stopped mid-period), so its
    record averages over the whole period as an uninterrupted run's does."""
    cfg, steps = exp.cfg, exp.steps
    training = cfg.training
    start_time = time.perf_counter()
    eval_every = training.eval_every or exp.steps_per_epoch
    sampler = EpochSampler(num_examples(exp.splits.train[0]), training.batch_size, cfg.seed)
    metric_name = exp.steps.task.progress_metric
    # a resumed run that had already stopped early stays stopped
    stopped_early = training.patience is not None and book.evals_without_improvement >= training.patience
    progress = TrainProgress(exp.total_steps, step, metric_name) if show_progress else None
    unsaved_best = None  # (step, checkpoint items, meta) of an improvement between due saves
    last_save, saved_step, record = time.perf_counter(), step, {}
    alone = jax.process_count() == 1  # several processes agree on stopping at evaluations only
    with progress or contextlib.nullcontext():
        while step < exp.total_steps and not stopped_early:
            period_end = min((step // eval_every + 1) * eval_every, exp.total_steps)
            period_start, compile_before, clock = step, steps.compile_s, time.perf_counter()
            chunks = [period_so_far] if period_so_far else []
            period_so_far = None
            while step < period_end:
                count = min(training.steps_per_dispatch, period_end - step)
                metrics = steps.train_chunk(exp.x_train, exp.y_train, sampler.indices(step, count), step)
                bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
                if bad.size:
                    if unsaved_best is not None:  # the best state so far is a good one: keep it
                        checkpoints.save(*unsaved_best, True)
                    checkpoints.wait()
                    raise TrainingFailure(f"loss became {metrics['loss'][bad[0]]} at step {step + int(bad[0]) + 1}; stopped, "
                                          f"{_kept_after_divergence(exp, checkpoints)}; lower optimizer.learning_rate "
                                          "or set optimizer.clip_norm")
                step += count
                chunks.append(metrics)
                if training.log_every:
                    _log_steps(log, chunks, step, count, training.log_every)
                samples_per_s = _rate(step - period_start, training.batch_size, clock, steps.compile_s - compile_before)
                if progress:
                    progress.update(step, _epoch(step, exp), float(metrics["loss"][-1]),
                                    _last_finite(metrics[metric_name]), samples_per_s)
                if alone and interrupts.received() and step < period_end:
                    meta = {**_meta(exp, step, book, record), "period_so_far": _chunk_to_json(chunks)}
                    raise _stop(exp, checkpoints, step, meta, unsaved_best, saved_step)
            record = _period_record(exp, step, chunks, samples_per_s, time.perf_counter() - start_time)
            exp.steps.task.evaluated(exp.eval_model(), cfg, run_dir, record)
            log.write(record)
            if progress:
                progress.log(_describe(record))
                for warning in record.get("warnings", []):
                    progress.log(f"[yellow]warning[/yellow] at step {step}: {warning}")
            value = record[cfg.monitor]
            improved = book.update(value, step, cfg.monitor_mode, training.min_delta)
            stopped_early = training.patience is not None and book.evals_without_improvement >= training.patience
            status.beat(step, {"step": book.best_step, "value": book.best_value})
            due = decided_by_process_0(math.ceil(step / eval_every) % cfg.checkpoint.every == 0
                                       and time.perf_counter() - last_save >= cfg.checkpoint.min_interval_s)
            if due or stopped_early or step == exp.total_steps:
                if unsaved_best is not None and not improved:  # still the best: written before this step
                    checkpoints.save(*unsaved_best, True)
                unsaved_best = None
                checkpoints.save(step, exp.checkpoint_items(), _meta(exp, step, book, record), improved)
                last_save, saved_step = time.perf_counter(), step
            elif improved:  # held until the next save: a later improvement before then replaces it
                unsaved_best = step, _copied(exp.checkpoint_items()), _meta(exp, step, book, record)
            if interrupts.received() if alone else decided_by_process_0(interrupts.received() is not None):
                raise _stop(exp, checkpoints, step, _meta(exp, step, book, record), unsaved_best, saved_step)
            if progress and stopped_early:
                progress.log(f"early stopping at step {step}: {cfg.monitor} has not improved for {training.patience} evaluations")
    checkpoints.wait()
    return _finish(exp, run_dir, checkpoints, log, book, step, stopped_early, time.perf_counter() - start_time, data_dir)


def _log_steps(log: MetricsLog, chunks: list[dict], step: int, count: int, every: int) -> None:
    """TensorBoard `train_step/<metric>` at each multiple of `every` among the `count`
    steps just run (up to `step`): the mean over the `every` steps up to it, or over
    those of the evaluation period so far (`chunks`: its per-step metrics), so a resumed
    run logs what an uninterrupted one does. It runs between chunks of steps, so it works
    on short Python lists (cheaper than NumPy calls at these sizes)."""
    first = (step - count) // every * every + every
    if first > step:
        return
    names = [name for name in chunks[-1] if name != "lr"]
    recent = {name: [] for name in names}  # the last per-step values, enough for every window
    have = 0
    for chunk in reversed(chunks):
        for name in names:
            recent[name][:0] = chunk[name].tolist()
        have += len(chunk["loss"])
        if have >= step - first + every:
            break
    for at in range(first, step + 1, every):
        end = have - (step - at)  # recent[name][end - 1] is step `at`
        log.write_scalars(at, {f"train_step/{name}": _mean_measured(recent[name][max(end - every, 0):end])
                               for name in names})


def _mean_measured(values: list[float]) -> float:
    """The mean of the values that are not NaN (a step without that metric, as a GAN's
    generator loss on a discriminator-only step); NaN if none is."""
    measured = [v for v in values if v == v]
    return sum(measured) / len(measured) if measured else float("nan")


def _kept_after_divergence(exp: Experiment, checkpoints: RunCheckpoints) -> str:
    """Which checkpoint a diverged run keeps as its last good one, in words: the newest
    whose model weights are all finite and whose evaluation at its step (when it was
    saved at one) measured finite validation metrics. A newer one that is not (the
    update that diverged came before it was saved) is named as such."""
    target = {"model": exp.checkpoint_items()["model"]}
    bad = []
    for step in reversed(checkpoints.steps()):
        try:
            items, meta = checkpoints.restore(step, target)
        except BadInput:
            bad.append(step)
            continue
        record = meta.get("metrics") or {}
        measured = [v for k, v in record.items() if k.startswith("val/") and isinstance(v, (int, float))
                    ] if record.get("step") == step else []
        weights = jax.tree.leaves(on_host(items["model"]))
        if all(math.isfinite(v) for v in measured) and all(np.isfinite(w).all() for w in weights):
            newer = f"; the newer checkpoint(s) {', '.join(map(str, reversed(bad)))} hold non-finite values" if bad else ""
            return f"keeping the last good checkpoint (step {step}) in {checkpoints.directory}{newer}"
        bad.append(step)
    if not bad:
        return "no checkpoint was saved before it"
    return (f"no good checkpoint is kept: checkpoint(s) {', '.join(map(str, reversed(bad)))} in {checkpoints.directory} "
            "hold non-finite values")


def _stop(exp: Experiment, checkpoints: RunCheckpoints, step: int, meta: dict, unsaved_best,
          saved_step: int) -> interrupts.Interrupted:
    """What a signal ends a run with, at a safe point: the best state held since the last
    checkpoint and the current step (with `meta`) are saved, then the one line saying so."""
    if unsaved_best is not None:
        checkpoints.save(*unsaved_best, True)
    if saved_step != step:
        checkpoints.save(step, exp.checkpoint_items(), meta, False)
    checkpoints.wait()
    signum = interrupts.received() or signal.SIGINT  # several processes: process 0's signal stops them all
    return interrupts.Interrupted(signum, f"stopped by {interrupts.signal_name(signum)} at step {step}; checkpoint "
                                          f"{step} is saved in {checkpoints.directory}; rerun the same command with "
                                          "--resume to continue")


def _finish(exp: Experiment, run_dir: Path, checkpoints: RunCheckpoints, log: MetricsLog, book: Bookkeeping,
            step: int, stopped_early: bool, wall_s: float, data_dir: Path) -> dict:
    """Restore the best checkpoint if asked, measure val and test (and an autoencoder's
    analyses, see `dlcli.tasks.analysis`), write summary.json; the test metrics and the
    best monitored value go to TensorBoard, ending the run's HParams session."""
    cfg = exp.cfg
    final_record = next((r for r in reversed(RunDir(run_dir).metrics()) if r["step"] == step), {})
    evaluated = book.best_step if cfg.training.restore_best else step
    if evaluated != step:
        items, _ = checkpoints.restore(evaluated, {"model": exp.checkpoint_items()["model"]})
        exp.load_checkpoint_items(items)
    metrics = {}
    confusion = None
    for split in ("val", "test"):
        if split == "val" or exp.splits.test is not exp.splits.val:  # a text corpus validates and tests on one part
            values, sums = exp.steps.evaluate(exp.eval_batches(split))
        metrics.update({f"{split}/{k}": v for k, v in values.items()})
        if split == "test" and "confusion" in sums:
            confusion = np.asarray(sums["confusion"]).tolist()
    metrics.update({f"final/{k}": v for k, v in final_record.items() if k.startswith(("train/", "val/"))})
    analysis = exp.steps.task.finished(exp.eval_model(), cfg, exp.splits, run_dir, data_dir)
    metrics.update(analysis.pop("metrics", {}))
    summary = {
        "run_dir": str(run_dir), "name": cfg.name, "model": cfg.model.name, "dataset": cfg.data.name,
        "params": exp.params, "steps": step, "epochs": round(step / exp.steps_per_epoch, 3),
        "best_step": book.best_step, "monitor": cfg.monitor, "best_value": book.best_value,
        "evaluated_checkpoint": evaluated, "stopped_early": stopped_early,
        "metrics": metrics, "confusion": confusion, **_baseline(exp), **_gradient_flow(run_dir),
        **({"analysis": analysis} if analysis else {}),
        "wall_s": round(wall_s, 3), "compile_s": round(exp.steps.compile_s, 3),
        "device": exp.placement.mesh.devices.flat[0].platform, "parallel": exp.placement.describe(),
        "environment": environment(),
    }
    if interrupts.received() and jax.process_count() == 1:
        signum = interrupts.received()
        raise interrupts.Interrupted(signum, f"stopped by {interrupts.signal_name(signum)} during the final "
                                             f"evaluation; every checkpoint is saved in {checkpoints.directory}; "
                                             "rerun the same command with --resume to finish it")
    final = {k: v for k, v in metrics.items() if k.startswith("test/") and isinstance(v, (int, float))}
    if book.best_value is not None:
        final[f"best/{cfg.monitor}"] = book.best_value
    log.finish(step, final, cfg.to_dict())
    RunDir(run_dir).write_summary(summary)
    return summary


VERSIONED = ("dlcli", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


@functools.cache
def environment() -> dict:
    """What a run's numbers depend on besides its config: the package versions, Python,
    the CPU and the accelerator. Runs agree bit for bit only where all of it is the same.
    Read once per process (a run's status.json and summary.json, a worker's every job)."""

    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    return {"versions": {**versions, "python": platform.python_version()}, "cpu": _cpu_model(),
            "accelerator": None if device.platform == "cpu" else device.device_kind}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _baseline(exp: Experiment) -> dict:
    """The dataset's reference predictor measured on the test split, e.g. {"baseline":
    {"name": "always predict 1", "metrics": {"test/loss": 0.167}}}; {} if it has none."""
    baseline = exp.cfg.data.baseline(exp.splits)
    if baseline is None:
        return {}
    name, metrics = baseline
    return {"baseline": {"name": name, "metrics": metrics}}


def _gradient_flow(run_dir: Path) -> dict:
    """Plot the logged gradient-flow norms to gradient_flow.png; the last ones in brief."""
    logged = [r for r in RunDir(run_dir).metrics() if "gradient_flow" in r]
    if not logged:
        return {}
    from dlcli.plots import gradient_flow

    gradient_flow(logged, run_dir / "gradient_flow.png", title=f"{run_dir.name}: norm of d(loss)/d(h_t)")
    last = logged[-1]["gradient_flow"]
    return {"gradient_flow": {"step": logged[-1]["step"], "first": last[0], "last": last[-1]}}


def _period_record(exp: Experiment, step: int, chunks: list[dict], samples_per_s: float, wall_s: float) -> dict:
    joined = _joined(chunks)
    record = {"step": step, "epoch": _epoch(step, exp)}
    record.update({f"train/{k}": _mean_of_numbers(joined[k]) for k in joined
                   if k != "lr" and not k.endswith("grad_norm")})
    record.update({k: _mean_of_numbers(joined[k]) for k in joined if k.endswith("grad_norm")})
    record["lr"] = float(joined["lr"][-1])
    val, _ = exp.steps.evaluate(exp.eval_batches("val"))
    record.update({f"val/{k}": v for k, v in val.items()})
    if exp.cfg.training.gradient_flow:
        record["gradient_flow"] = [float(v) for v in exp.steps.gradient_flow(exp.eval_batches("val"))]
    record["samples_per_s"] = round(samples_per_s, 1)
    record["wall_s"] = round(wall_s, 3)
    record["parallel"] = exp.placement.describe()  # what ran it: processes, devices and their kind
    return record


def _copied(items: dict) -> dict:
    """Device copies of checkpoint items: the training state's own buffers are donated
    to the next chunk of steps."""
    return jax.tree.map(lambda a: a.copy(), items)


def _meta(exp: Experiment, step: int, book: Bookkeeping, record: dict) -> dict:
    return {
        "step": step, "epoch": _epoch(step, exp), "bookkeeping": dataclasses.asdict(book),
        "best_step": book.best_step, "metrics": record, "config": exp.cfg.to_dict(),
        "rng_key": np.asarray(jax.random.key_data(exp.steps.key)).tolist(),
    }


def _joined(chunks: list[dict]) -> dict[str, np.ndarray]:
    """The per-step metrics of consecutive chunks as one array per metric."""
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _chunk_to_json(chunks: list[dict]) -> dict:
    """The per-step metrics of `chunks` joined, as JSON: {name: [dtype, values]}."""
    return {k: [str(v.dtype), v.tolist()] for k, v in _joined(chunks).items()}


def _chunk_from_json(saved: dict | None) -> dict | None:
    """What `_chunk_to_json` saved, as one chunk of the arrays it held (None: nothing saved)."""
    return {k: np.asarray(values, dtype=dtype) for k, (dtype, values) in saved.items()} if saved else None


def _mean_of_numbers(values: np.ndarray) -> float:
    """The mean over the steps that measured the metric (NaN marks a step without a
    generator update); NaN if none did."""
    measured = values[~np.isnan(values)]
    return float(measured.mean()) if measured.size else float("nan")


def _last_finite(values: np.ndarray) -> float:
    """The last finite value of a chunk's metric (a GAN's g_loss is NaN on steps without a generator update)."""
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")


def _describe(record: dict) -> str:
    """One line per evaluation, e.g. 'step 430 (epoch 1): train/loss 0.3127  val/loss 0.2210 ...'."""
    shown = [k for k in record if k.startswith(("train/", "val/"))]
    values = "  ".join(f"{k} {record[k]:.4f}" for k in shown)
    return f"step {record['step']} (epoch {record['epoch']}): {values}"


def _epoch(step: int, exp: Experiment) -> int:
    return step // exp.steps_per_epoch


def _rate(n_steps: int, batch_size: int, since: float, compile_s: float) -> float:
    elapsed = max(time.perf_counter() - since - compile_s, 1e-9)
    return n_steps * batch_size / elapsed
