"""A throwaway PostgreSQL cluster of a test's own (initdb, pg_ctl) on its own port and data
directory, which the test may stop, freeze (SIGSTOP) and restart: never the shared server."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from testkit.server import descendants, free_port


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on the PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Cluster:
    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, *command: str) -> None:
        """A PostgreSQL tool, as the `postgres` user when this runs as root (initdb refuses root)."""
        argv = [str(self.bin / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)  # noqa: S603 (our own command)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def processes(self) -> list[int]:
        pid = self.postmaster()
        return [pid, *descendants(pid)]

    def freeze(self) -> None:
        """Every process of the cluster stopped (SIGSTOP): connections stay open and answer nothing."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGCONT)


@contextmanager
def throwaway_cluster(workdir: Path) -> Iterator[Cluster]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("initdb and pg_ctl are not installed (Debian: postgresql)")
    data = workdir / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        os.chown(data, user.pw_uid, user.pw_gid)
    cluster = Cluster(bin_dir, data, free_port())
    cluster.run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    cluster.start()
    try:
        yield cluster
    finally:
        with suppress(OSError, ValueError):  # not running
            cluster.thaw()
        with suppress(subprocess.CalledProcessError):  # already stopped
            cluster.stop()
