"""dlcli: a command-line deep-learning experiment runner (JAX, Flax NNX, Optax, Orbax).

The package's layers, lowest first. A module imports only from its own layer or
below (tests/test_architecture.py walks every import and holds this true); imports
needed for type annotations alone sit under `if TYPE_CHECKING:` and do not count.

    cli, __main__, worker            one module per command: parse, call the library, print
    batch, compare, sweep,           many runs: worker processes, statistics, reports
      sweep_optuna
    training, generate, predict,     experiment builder, steps, loop, eval; sampling; predict;
      api                            the Python API (dlcli.train, dlcli.load_run)
    tasks                            what a batch means: loss, metrics, a GAN's two players, analyses
    runs, optim                      a run folder (config, checkpoints, restore); optax optimizers
    config                           the typed experiment config, YAML, --set overrides
    specs                            model specs: pure config sections that build models
    models                           Flax NNX modules, one family per file
    data, checkpoint                 datasets by name; Orbax items of a run
    errors, registry, schema,        the ground floor: no JAX
      console, plots, stats, runlog,
      allocator, files, interrupts, report
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`dlcli.load_run` and `dlcli.train` (`dlcli.api`), imported on first use so that
    `import dlcli` does not import JAX."""
    if name in ("load_run", "train"):
        from dlcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'dlcli' has no attribute {name!r}")
