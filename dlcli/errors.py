"""The two kinds of failure the CLI reports without a traceback.

`BadInput` (exit code 2) is raised before any work starts, for anything the user can fix
in a config, a flag or a file. `TrainingFailure` (exit code 1) is raised when a run that
started cannot go on (a NaN loss, say). Messages are one line naming the problem and
the fix.
"""


class DlcliError(Exception):
    exit_code = 1


class BadInput(DlcliError):
    exit_code = 2


class TrainingFailure(DlcliError):
    exit_code = 1
