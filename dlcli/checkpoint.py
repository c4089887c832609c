"""Orbax checkpoints of a run: the last K and the best by the monitored metric.

Each checkpoint is a step folder under `run_dir/checkpoints/` holding three items:
`model` and `optimizer`, each a pure pytree of arrays (so a model restores without
building an optimizer), and `meta`, JSON with the step, epoch, the base RNG key, the
early-stopping bookkeeping, that evaluation's metrics, the resolved config and the
sha256 of each array item; Orbax adds `metrics` (whether the save was the best, and
its step), from which it picks what to keep, after a resume too. Orbax writes each save into a temporary folder and renames
it when complete, so a crash mid-save leaves the previous checkpoints intact. Restores
use freshly built state as the target, so shapes and dtypes come from the config, not
from whatever is on disk.

Folders written before this layout hold one item `state` (model and optimizer as the
pytree {0: model, 1: optimizer}); they are read as they are (`_restore_legacy`), and
checkpoints a resumed run adds are in the current layout.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.errors import BadInput, report_line, restore_stderr, stderr_silenced_on_failure

ITEMS = ("model", "optimizer")
LEGACY_ITEM = "state"


@functools.cache
def _quiet_orbax() -> None:
    """Orbax's failures reach dlcli as exceptions, each reported in one line: its logs
    stay quiet (a failed save's thread also logs its traceback, repeatedly on a full
    disk), and so do the TensorStore writes of a failed save that complete after its
    event loop closed (bare "Event loop is closed" tracebacks, one per write)."""
    for name in ("absl", "orbax", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _drop_unraisable_reports(_is_callback_into_a_closed_loop)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir).absolute() / "checkpoints"


def has_checkpoint(run_dir: Path) -> bool:
    return bool(finished_steps(run_dir))


def finished_steps(run_dir: Path) -> list[int]:
    """The steps whose checkpoint was written to the end (Orbax renames a step's folder
    to its number only then), in order."""
    folder = checkpoint_dir(run_dir)
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


class RunCheckpoints:
    """A CheckpointManager keeping the last `keep` steps plus the best one.

    Which step is best is decided by the training loop (with its min_delta and
    tie-breaking), not re-derived here: each save records whether it was the best so
    far, and the most recent such save is the current best.
    """

    def __init__(self, run_dir: Path, *, keep: int, read_only: bool = False):
        _quiet_orbax()
        import orbax.checkpoint as ocp
        from orbax.checkpoint import checkpoint_managers as policies

        self._ocp = ocp
        self.directory = checkpoint_dir(run_dir)
        keep_policy = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=_recency_as_best, n=1),
        ])
        options = ocp.CheckpointManagerOptions(
            # best_fn makes Orbax write each save's metrics into its step folder, so the
            # policy still knows the best after the folder is reopened (a resumed run)
            preservation_policy=keep_policy, best_fn=_recency_as_best, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only, enable_async_checkpointing=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, items: dict[str, Any], meta: dict, is_best: bool) -> None:
        """Start an asynchronous save of the array `items` (model, optimizer) and `meta`;
        the previous save is finished first. Each item's sha256 goes into meta, so a
        restore can tell a damaged checkpoint from a real one."""
        self.wait()
        meta = {**meta, "sha256": {name: state_digest(tree) for name, tree in items.items()}}
        ocp = self._ocp
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        self.manager.save(step, args=ocp.args.Composite(**args, meta=ocp.args.JsonSave(meta)),
                          metrics={"was_best": float(is_best), "step": float(step)})

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def resolve(self, which: str) -> int:
        """'latest', 'best' or a step number -> an existing step."""
        steps = self.steps()
        if not steps:
            raise BadInput(f"{self.directory} holds no checkpoint; train the run first")
        if which == "latest":
            return steps[-1]
        if which == "best":
            return int(self.read_meta(steps[-1])["best_step"])
        if which.isdigit() and int(which) in steps:
            return int(which)
        raise BadInput(f"--checkpoint {which!r} is not available; use best, latest or one of the saved steps: "
                       f"{', '.join(map(str, steps))}")

    def read_meta(self, step: int) -> dict:
        try:
            with stderr_silenced_on_failure():
                restored = self.manager.restore(step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore()))
        except Exception as err:  # any failure to read means the checkpoint is unusable
            raise self._unreadable(step, err) from None
        return dict(restored["meta"])

    def restore(self, step: int, targets: dict[str, Any]) -> tuple[dict[str, Any], dict]:
        """({name: tree shaped like targets[name]}, meta) of checkpoint `step`, for the
        items named in `targets` (model, optimizer, or both)."""
        if (self.directory / str(step) / LEGACY_ITEM).is_dir():
            return self._restore_legacy(step, targets)
        ocp = self._ocp
        args = {name: ocp.args.StandardRestore(target) for name, target in targets.items()}
        try:
            with stderr_silenced_on_failure():  # a failing read leaves stray tracebacks (see there)
                restored = self.manager.restore(step, args=ocp.args.Composite(**args, meta=ocp.args.JsonRestore()))
        except Exception as err:  # corrupt, truncated or mismatched files all land here
            raise self._unreadable(step, err) from None
        meta = dict(restored["meta"])
        trees = {name: restored[name] for name in targets}
        for name, tree in trees.items():
            if state_digest(tree) != meta.get("sha256", {}).get(name):
                raise self._unreadable(step, ValueError(f"the {name} arrays do not match the checksum saved with them"))
        return trees, meta

    def _restore_legacy(self, step: int, targets: dict[str, Any]) -> tuple[dict[str, Any], dict]:
        """A checkpoint of the earlier layout: one item `state` = {0: model, 1: optimizer}
        with one checksum. It is read whole without a target (Orbax then gives digit keys
        as strings, made integers again here so the checksum sees the saved order), then
        split and checked against the targets' structure, shapes and dtypes."""
        import jax

        ocp = self._ocp
        try:
            with stderr_silenced_on_failure():
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    **{LEGACY_ITEM: ocp.args.StandardRestore()}, meta=ocp.args.JsonRestore()))
        except Exception as err:
            raise self._unreadable(step, err) from None
        meta = dict(restored["meta"])
        state = _integer_keys(restored[LEGACY_ITEM])
        if state_digest(state) != meta.get("state_sha256"):
            raise self._unreadable(step, ValueError("the arrays do not match the checksum saved with them"))
        trees = {}
        for name, target in targets.items():
            tree = state[ITEMS.index(name)]
            same = jax.tree.structure(tree) == jax.tree.structure(target) and all(
                np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
                for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(target)))
            if not same:
                raise self._unreadable(step, ValueError(f"its {name} arrays do not fit the model of the saved config"))
            trees[name] = jax.tree.map(lambda a, b: jax.numpy.asarray(a, dtype=np.asarray(b).dtype), tree, target)
        return trees, meta

    def _unreadable(self, step: int, err: Exception) -> "UnreadableCheckpoint":
        return UnreadableCheckpoint(step, self.directory, f"{type(err).__name__}: {' '.join(str(err).split())[:160]}")

    def restore_chosen(self, which: str, targets: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(step, trees) of checkpoint `which` ('best', 'latest' or a step, as `resolve`);
        'latest' is the newest that reads back (`restore_newest_readable`)."""
        step = self.resolve(which)
        if which == "latest":
            step, trees, _ = self.restore_newest_readable(targets)
            return step, trees
        return step, self.restore(step, targets)[0]

    def restore_newest_readable(self, targets: dict[str, Any]) -> tuple[int, dict[str, Any], dict]:
        """(step, trees, meta) of the newest checkpoint that reads back whole and matches
        its checksums. Each newer one that does not is named in a warning line; `BadInput`
        when none can be read."""
        passed_over = []
        for step in reversed(self.steps()):
            try:
                trees, meta = self.restore(step, targets)
            except UnreadableCheckpoint as err:
                passed_over.append(err)
                continue
            for err in passed_over:
                report_line(f"warning: {err.description}; using checkpoint {step}, the newest readable one")
            if passed_over:
                _drop_unraisable_reports(_is_unfinished_orbax_read)
                restore_stderr()
            return step, trees, meta
        if not passed_over:
            raise BadInput(f"{self.directory} holds no checkpoint; train the run first")
        raise BadInput(f"none of the {len(passed_over)} checkpoints in {self.directory} can be read (the newest, "
                       f"{passed_over[0].step}: {passed_over[0].reason}); retrain with --overwrite")

    def delete_newer_than(self, step: int) -> None:
        """Remove the checkpoints after `step` (unreadable ones a resume passed over)."""
        for newer in self.steps():
            if newer > step:
                self.manager.delete(newer)

    def wait(self) -> None:
        """Block until the last asynchronous save is on disk (its errors raise here)."""
        self.manager.wait_until_finished()

    def close(self, quietly: bool = False) -> None:
        """Finish the last save and close; `quietly`: after a failed save (a full disk),
        whose error is reported already, ignore it if it comes back here."""
        try:
            self.manager.wait_until_finished()
            self.manager.close()
        except Exception:
            if not quietly:
                raise


def _drop_unraisable_reports(matches) -> None:
    """Drop from now on the exceptions Python would report on stderr as unraisable (from a
    finalizer or a callback of a foreign thread) for which `matches(unraisable)` holds;
    others are reported as before. Used only for failures already reported in one line."""
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not matches(unraisable):
            default(unraisable)

    sys.unraisablehook = hook


def _is_unfinished_orbax_read(unraisable) -> bool:
    """After a failed read, Orbax's unfinished read coroutines, collected later ("Exception ignored in")."""
    code = getattr(unraisable.object, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


def _is_callback_into_a_closed_loop(unraisable) -> bool:
    """After a failed save (a full disk), TensorStore's threads finishing the other writes
    and calling back into the save's closed asyncio loop (a bare "Traceback ... Event loop is closed")."""
    return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"


class UnreadableCheckpoint(BadInput):
    """Checkpoint `step` in `directory` cannot be read back whole, for `reason`."""

    def __init__(self, step: int, directory: Path, reason: str):
        self.step, self.reason = step, reason
        self.description = f"checkpoint {step} in {directory} is corrupt or unreadable ({reason})"
        super().__init__(f"{self.description}; pick another with --checkpoint STEP, or retrain with --overwrite")


def _recency_as_best(metrics: dict) -> float:
    """Orders saves so that the most recent one saved as the best comes first."""
    return metrics["was_best"] * 2**31 + metrics["step"]


def _integer_keys(tree: Any) -> Any:
    """Nested dicts with digit-string keys ('10') turned back into the integers they were."""
    if isinstance(tree, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: _integer_keys(v) for k, v in tree.items()}
    return tree


def whole_array(array: Any) -> Any:
    """The whole of an array in this process: itself, or for a global array of a
    multi-process run its own copy when replicated, else the pieces gathered from every
    process (a collective: every process must ask at the same point)."""
    import jax

    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return array
    if array.is_fully_replicated:
        return array.addressable_data(0)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(array, tiled=True)


def on_host(tree: Any) -> Any:
    """`tree` with every array a NumPy copy of the whole array (see `whole_array`)."""
    import jax

    return jax.device_get(jax.tree.map(whole_array, tree))


def state_digest(state: Any) -> str:
    """sha256 over every array of a pure state, in pytree order (the same in every
    process of a multi-process run, whatever the arrays' sharding)."""
    import jax

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):  # one at a time: a large state is never all on the host at once
        digest.update(np.ascontiguousarray(on_host(leaf)).tobytes())
    return digest.hexdigest()
