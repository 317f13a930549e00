"""The `envbuild` console script and `python -m envbuild`.

The cyclic garbage collector is switched off before anything is imported: start-up allocates tens
of thousands of long-lived objects (click, envbuild's modules), and the collections they trigger
cost ~4-8 % of a no-op `lock` or `sync` (paired whole-process runs on this 2-core machine: ~6 ms of
CPU per run, where the no-op `sync` target of uv + 100 ms has no such margin). An envbuild run is
one short command whose few cycles the OS reclaims at exit (`cli.main` ends the process without
teardown); nothing it does relies on a finalizer (files, temporary folders and processes are
closed by context managers).
"""

from __future__ import annotations


def main() -> None:
    import gc

    gc.disable()
    from envbuild.cli import main as run_command

    run_command()


if __name__ == "__main__":
    main()
