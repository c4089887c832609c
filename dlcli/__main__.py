"""`python -m dlcli` and the `dlcli` console script: the memory allocator is chosen first
(`dlcli.allocator`: this may re-execute the command with tcmalloc preloaded, so it
happens before anything large is imported), then the CLI runs."""

import sys


def main() -> None:
    from dlcli import allocator, interrupts
    from dlcli.errors import DlcliError

    interrupts.install(exit_at_once=True)  # first: a signal during start-up is one line too

    try:
        allocator.preload_tcmalloc(sys.argv[1:])
    except DlcliError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    allocator.keep_freed_memory()
    from dlcli.cli import main as run_command_line

    run_command_line()


if __name__ == "__main__":
    main()
