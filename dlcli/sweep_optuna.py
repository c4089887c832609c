"""Trials kept in an Optuna study: the `optuna` strategy, and every strategy with `--storage`
(optional extra: pip install "dlcli[optuna]").

The study holds one slot per trial of the budget, queued once and in order when the
study is created: a grid's or a random sweep's slots carry their parameters; the optuna
strategy's are filled by Optuna's TPE sampler when a process takes them. Every `dlcli
sweep` process pointed at the study takes queued slots, `workers` at a time (Optuna's
queue gives each to one process), trains each as an ordinary run folder
`trials/trial-NNN` (NNN the slot), tells the study how it ended, and once the queue is
empty waits for the slots the others train; then each reports the whole study. So the
study ends with exactly its slots finished, none trained twice. While an optuna trial
trains, its validation metric is read from metrics.jsonl and reported to Optuna, whose
median pruner may stop it early.

Storage: without `--storage`, `optuna.db` (SQLite) in the sweep folder, worked by this
process alone, so a trial an earlier, killed run left running is queued again at once.
With `--storage`, a SQLAlchemy URL (Optuna's RDB storage: postgresql://, mysql://,
sqlite:///) or `journal:PATH` (Optuna's journal file, on a filesystem all processes
see), and the sweep folder must be on such a filesystem too. There each process stamps
its running trials with a heartbeat every `dead_after / 6` seconds; a trial whose
stamp is older than `dead_after` (its process died: killed, its machine lost) is failed
by whichever process sees it first and queued again for its slot, `RETRIES` times at
most (then it stays failed). A retry, like a trial Ctrl-C handed back, trains in the
same run folder and so continues from its last checkpoint (`dlcli.batch` resumes a run
folder with checkpoints), or is read back if the run had finished.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

from dlcli.batch import Job, JobPool, JobResult
from dlcli.errors import BadInput
from dlcli.runs import RunDir
from dlcli.sweep import Sweep, Trial, trial_params

try:
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat  # what `fail_stale_trials` checks for
    from optuna.trial import TrialState
except ImportError:
    raise BadInput('strategy: optuna and --storage need the optional extra; install it with '
                   'pip install "dlcli[optuna]"') from None

RETRIES = 3  # queued again at most this many times after its process died, then failed
SCHEMA_TRIES = 5  # tries to open a new database whose tables another process is creating
POLL_S = 0.5  # how often a process with nothing to take looks at the study again
SLOT, PLANNED, VOID = "slot", "planned_slots", "void"  # user attributes: a trial's slot, the study's plan
RETRY_OF = "failed_trial"  # the system attribute Optuna's retry callback sets on a retry
HEARTBEAT = "dlcli:heartbeat"  # a journal trial's last heartbeat (time.time() of its process)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
LOST = f"lost: its sweep process died while training it (no heartbeat), and it had been retried {RETRIES} times"


def run_study(sweep: Sweep, storage_url: str | None, *, workers: int, data_dir: Path, dead_after: int,
              on_done: Callable[[JobResult], None]) -> list[Trial]:
    """Train this process's share of the study's slots, wait for the others'; every
    slot's trial (its last attempt), in slot order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = storage_url is not None
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        distributions = {key: _distribution(key, spec) for key, spec in sweep.space.items()}
        sweep.folder.mkdir(parents=True, exist_ok=True)
        storage = open_storage(storage_url, dead_after) if shared else optuna.storages.RDBStorage(
            f"sqlite:///{sweep.folder / 'optuna.db'}")
        plan = trial_params(sweep) if sweep.cfg.strategy != "optuna" else [{}] * sweep.cfg.trials
        study = _open_study(sweep, storage, plan, shared, dead_after)
        with JobPool(workers=workers, data_dir=data_dir) as pool, _Heartbeats(storage, study) as heartbeats:
            while True:
                optuna.storages.fail_stale_trials(study)  # a dead process's trials: failed, queued again
                taken = _take(study, distributions, workers, heartbeats)
                if taken:
                    _train(sweep, study, pool, taken, heartbeats, on_done)
                elif _finished(study, len(plan)):
                    break
                else:
                    time.sleep(POLL_S)  # other processes train the slots left
        return [_trial(sweep, slot, frozen) for slot, frozen in sorted(_slots(study).items())
                if frozen.state in FINISHED]


def open_storage(url: str, dead_after: int):
    """The storage `--storage URL` names, with heartbeats; `BadInput` naming the problem
    and the fix for a URL that is neither a database nor a journal file, a missing
    driver, a server that cannot be reached."""
    heartbeat = {"heartbeat_interval": max(1, dead_after // 6), "grace_period": dead_after,
                 "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(RETRIES)}
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser()
        if not path.name:
            raise BadInput(f"--storage {url}: name the journal file, journal:PATH")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _JournalStorage(str(path), **heartbeat)
        except OSError as err:
            raise BadInput(f"--storage {url}: cannot open the journal file ({err.strerror or err}); give "
                           f"journal:PATH, PATH a file on a filesystem every sweep process can write") from None
    import sqlalchemy

    try:
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        shown = url
    try:
        for attempt in range(SCHEMA_TRIES):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, **heartbeat)
            # processes creating a new database's tables at once collide in PostgreSQL's
            # catalogue; the losers open it again once the winner's tables are there
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == SCHEMA_TRIES - 1:
                    raise
                time.sleep(POLL_S)
    except ImportError as err:
        raise BadInput(f"--storage {shown}: its database driver is not installed ({err.__cause__}); for "
                       f'PostgreSQL install dlcli with pip install "dlcli[optuna]", for others the driver '
                       f"SQLAlchemy names") from None
    except sqlalchemy.exc.ArgumentError:
        raise BadInput(f"--storage {shown}: not a database URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE, "
                       f"sqlite:///PATH, any SQLAlchemy URL) nor journal:PATH") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise BadInput(f"--storage {shown}: cannot use the database: {reason}; check that its server runs and "
                       f"the URL's host, port, user, password and database") from None


class _JournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's journal-file storage with the heartbeats only its RDB storage has: a running
    trial's heartbeat is a system attribute holding the wall-clock time of its process's
    last stamp, so the hosts' clocks must agree to well within the grace period (NTP)."""

    def __init__(self, path: str, *, heartbeat_interval: int, grace_period: int, heartbeat_stale_trial_callback):
        super().__init__(optuna.storages.journal.JournalFileBackend(path))
        self._interval, self._grace, self._on_stale = heartbeat_interval, grace_period, heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [self.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - trial.system_attrs.get(HEARTBEAT, trial.datetime_start.timestamp()) > self._grace]

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._on_stale


def _open_study(sweep: Sweep, storage, plan: list[dict], shared: bool, dead_after: int):
    """Create the study and queue its slots, or load it. Creating is atomic in both
    storages, so when processes start together one queues the slots while the others wait
    for its `PLANNED` mark; past `dead_after` without it (that process died while queueing)
    or when the sweep has grown, a process queues what is missing. Unshared, trials an
    earlier run left running are queued again at once."""
    pruner = optuna.pruners.MedianPruner(n_warmup_steps=1)
    try:
        study = optuna.create_study(study_name=sweep.cfg.name, storage=storage, pruner=pruner,
                                    direction="maximize" if sweep.cfg.direction == "max" else "minimize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.cfg.name, storage=storage, pruner=pruner)
        created = False
    # TPE: unshared, seeded, a rerun drawing anew rather than the first run's draws again; shared,
    # unseeded (its proposals depend on which process finishes first) and kept off running trials
    seed = None if shared else sweep.cfg.seed + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=shared)
    deadline = time.monotonic() + (dead_after if shared and not created else 0)
    while PLANNED not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(POLL_S)
    present = {trial.user_attrs.get(SLOT) for trial in study.get_trials(deepcopy=False)}
    for slot, params in enumerate(plan):
        if slot not in present:
            study.enqueue_trial(params, user_attrs={SLOT: slot})
    study.set_user_attr(PLANNED, len(plan))
    if not shared:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            _requeue(study, trial.number)
    return study


def _take(study, distributions: dict, count: int, heartbeats: "_Heartbeats") -> list:
    """Up to `count` queued trials, taken by this process, their heartbeats started at once.
    A spare one (no slot: Optuna made it because another process took the last queued
    trial first; or the second copy of a slot two processes queued at once) is marked
    void and failed."""
    taken = []
    while len(taken) < count and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask(distributions)
        trials = study.get_trials(deepcopy=False)
        this = next(t for t in trials if t.number == trial.number)
        slot = this.user_attrs.get(SLOT)
        if slot is None or RETRY_OF not in this.system_attrs and any(
                t.number < this.number and t.user_attrs.get(SLOT) == slot and RETRY_OF not in t.system_attrs
                for t in trials):
            trial.set_user_attr(VOID, True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            heartbeats.add(trial.number)
            taken.append(trial)
    return taken


def _train(sweep: Sweep, study, pool: JobPool, taken: list, heartbeats: "_Heartbeats",
           on_done: Callable[[JobResult], None]) -> None:
    """Train the taken trials as the run folders of their slots and tell the study how
    each ended; Ctrl-C hands them back to the queue."""
    jobs: list[tuple[object, Job]] = []
    for trial in taken:
        try:
            job = sweep.job(trial.user_attrs[SLOT], trial.params)
        except BadInput as err:  # an impossible combination fails alone
            _tell(study, trial, state=TrialState.FAIL, error=str(err))
            heartbeats.discard(trial.number)
            continue
        if sweep.cfg.strategy == "optuna":
            job.prune = _pruner(trial, sweep.cfg.metric.replace("test/", "val/"))
        jobs.append((trial, job))
    try:
        results = pool.run([job for _, job in jobs], on_done)
    except KeyboardInterrupt:
        for trial, _ in jobs:
            heartbeats.discard(trial.number)
            _requeue(study, trial.number)
        raise
    for (trial, _), result in zip(jobs, results):
        if result.status == "done":
            _tell(study, trial, result.summary["metrics"][sweep.cfg.metric])
        else:
            _tell(study, trial, state=TrialState.PRUNED if result.status == "pruned" else TrialState.FAIL,
                  error=result.error)
        heartbeats.discard(trial.number)


class _Heartbeats:
    """A thread that stamps the heartbeat of this process's running trials every heartbeat
    interval (no thread for a storage without heartbeats). A failed stamp (a database
    blip) is left to the next one: the grace period allows several."""

    def __init__(self, storage, study):
        self._storage = storage
        self._interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        self._study_id = storage.get_study_id_from_name(study.study_name)
        self._trial_ids: dict[int, int] = {}  # number -> storage id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dlcli-heartbeats", daemon=True)

    def __enter__(self) -> "_Heartbeats":
        if self._interval:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def add(self, number: int) -> None:
        """Stamp trial `number` now and at every interval from now on."""
        if self._interval:
            trial_id = self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            self._storage.record_heartbeat(trial_id)
            self._trial_ids[number] = trial_id

    def discard(self, number: int) -> None:
        self._trial_ids.pop(number, None)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            for trial_id in list(self._trial_ids.values()):
                with contextlib.suppress(Exception):
                    self._storage.record_heartbeat(trial_id)


def _tell(study, trial, value: float | None = None, *, state=TrialState.COMPLETE, error: str | None = None) -> None:
    """Record how `trial` ended, unless it has ended already: another process took its
    heartbeat for dead and queued it again, and that retry reads this run folder."""
    try:
        if error is not None:
            trial.set_user_attr("error", error)
        study.tell(trial, value, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _requeue(study, number: int) -> None:
    """Fail trial `number`, which this process will not finish, and queue its slot again
    with its parameters; nothing if another process has already done so."""
    (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if frozen.state != TrialState.RUNNING:
        return
    try:
        study.tell(number, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)


def _finished(study, slots: int) -> bool:
    """Whether each of the first `slots` slots has a finished trial."""
    latest = _slots(study)
    return all(slot in latest and latest[slot].state in FINISHED for slot in range(slots))


def _slots(study) -> dict:
    """Each slot's current trial: its last attempt (a retry is numbered after the trial
    it retries); void trials left out."""
    latest = {}
    for trial in study.get_trials(deepcopy=False):  # in number order
        if SLOT in trial.user_attrs and VOID not in trial.user_attrs:
            latest[trial.user_attrs[SLOT]] = trial
    return latest


def _trial(sweep: Sweep, slot: int, frozen) -> Trial:
    run_dir = sweep.run_dir(slot)
    status = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned"}.get(frozen.state, "failed")
    error = frozen.user_attrs.get("error", LOST if status == "failed" else None)
    return Trial(slot, frozen.params, status, frozen.value, error, str(run_dir) if run_dir.exists() else None)


def _distribution(key: str, spec):
    if spec.distribution == "choice":
        if not all(value is None or isinstance(value, (bool, int, float, str)) for value in spec.values):
            raise BadInput(f"space.{key}: an Optuna study (strategy optuna, --storage) takes numbers, strings, "
                           f"booleans or null as choices; give each other value its own sweep")
        return optuna.distributions.CategoricalDistribution(spec.values)
    if spec.distribution == "int_uniform":
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high))
    return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.distribution == "log_uniform")


def _pruner(trial, metric: str) -> Callable[[Path], bool]:
    """Reports each new evaluation of `metric` to the trial; True once Optuna prunes it."""
    reported: set[int] = set()

    def should_prune(run_dir: Path) -> bool:
        for record in RunDir(run_dir).metrics():
            if record["step"] not in reported and metric in record:
                trial.report(record[metric], record["step"])
                reported.add(record["step"])
        return bool(reported) and trial.should_prune()

    return should_prune
