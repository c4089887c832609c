"""`ModelSpec`: what every model spec declares to the rest of dlcli.

A spec is the config section of one architecture family (a dataclass whose fields are
the section's keys). The generic code (config, runs, the experiment builder, compare)
reads only what is declared here, never a family's own fields. Nothing here imports JAX
at import time; only the default `param_count`, for a spec without a closed form, does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from dlcli.errors import BadInput

if TYPE_CHECKING:
    from dlcli.data import DatasetInfo


class ModelSpec:
    """Base of every registered model spec.

    Class attributes a family sets:
    - `summary`, `reference_dataset`: the line `dlcli models` prints and the dataset its
      parameter count is given for;
    - `task_kind`: the task the model sets itself ("reconstruction", "generation"), or
      None to train on the dataset's own kind;
    - `recurrent`: it carries a hidden state through time (gradient-flow probes apply);
    - `generative`: it draws samples (`dlcli sample --n`);
    - `pretrained_from`: the field naming a run folder whose trained weights the model
      starts from (its parameter count depends on that run), or None;
    - `metrics`: metrics the model reports beside its task's;
    - `analyses`: it reads the config's analysis section (what a run measures after training).
    """

    summary: ClassVar[str]
    reference_dataset: ClassVar[str]
    task_kind: ClassVar[str | None] = None
    recurrent: ClassVar[bool] = False
    generative: ClassVar[bool] = False
    pretrained_from: ClassVar[str | None] = None
    metrics: ClassVar[tuple[str, ...]] = ()
    analyses: ClassVar[bool] = False

    def check_experiment(self, cfg) -> None:
        """`BadInput` for what the family needs across the config's sections (the scaling
        of its data, its analysis section, its optimizers); `cfg` is the ExperimentConfig."""

    def check_input(self, info: DatasetInfo) -> None:
        """`BadInput` unless the model can take the dataset described by `info`."""

    def check_data(self, data) -> None:
        """`BadInput` for a data section the model cannot use (its scaling, its kind)."""

    def metrics_for(self, info: DatasetInfo, task_metrics: tuple[str, ...]) -> tuple[str, ...]:
        """The metric names (without split) every evaluation reports, given the task's."""
        return (*task_metrics, *self.metrics)

    def referenced_runs(self) -> dict[str, str]:
        """Other run folders this run reads when its experiment is built, {field: folder}
        (a pre-trained encoder, a judging classifier); checked then, never by config parsing."""
        return {}

    def check_referenced(self, runs: dict[str, Any], data) -> None:
        """`BadInput` unless the configs of the referenced runs ({field: ExperimentConfig}) fit this one."""

    def label_classes(self, info: DatasetInfo) -> int:
        """How many classes a generative model can be asked to draw (`dlcli sample
        --label`); 0 for models that take no class."""
        return 0

    def pretrained_start(self) -> tuple[str, str] | None:
        """(run folder, checkpoint) whose model weights a new run starts from (the model's
        `load_pretrained` takes them), or None."""
        return None

    def param_count(self, info: DatasetInfo) -> int:
        """Trainable parameters of the model on `info`. This default builds the model
        abstractly (`nnx.eval_shape`: shapes only, no memory) and counts its `nnx.Param`
        leaves, which imports JAX; the built-in families give a closed form instead, so
        that `dlcli models` and config checks answer without it."""
        from flax import nnx

        from dlcli.models import count_params

        return count_params(nnx.eval_shape(lambda: self.build(info, nnx.Rngs(0))))

    # Every family also defines `build(info, rngs)` (the Flax NNX module, initialised
    # from `rngs`; it imports `dlcli.models`). A `pretrained_from` spec's size depends on
    # the referenced run, so its `build` and `param_count` take that run's config as a
    # third argument `runs` ({field: ExperimentConfig}); `dlcli.runs.build_model` calls
    # whichever applies.


def check_unit_pixels(spec: ModelSpec, data) -> None:
    """`BadInput` unless `data` scales its values to [0, 1], as a model that outputs them needs."""
    if getattr(data, "normalize", None) != "unit" and getattr(data, "binarize", None) is None:
        raise BadInput(f"model {spec.name!r} outputs values in [0, 1] but data {data.name!r} is "
                       "standardised; set data.normalize: unit (or data.binarize: 0.5)")
