"""`python -m bench`: every benchmark in turn, figures only (nothing here asserts on timing)."""

import os
import platform
import sqlite3
import time
from collections.abc import Callable

from bench import load, login, revocation, statements, verifier

BENCHMARKS: tuple[Callable[[], None], ...] = (
    revocation.run,
    verifier.run,
    statements.run,
    login.run,
    load.run,
)


def main() -> None:
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}"
    )
    started = time.perf_counter()
    for benchmark in BENCHMARKS:
        section_started = time.perf_counter()
        benchmark()
        print(f"\n  ({time.perf_counter() - section_started:.1f} s)")
    print(f"\nDone in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    main()
