"""A throwaway PostgreSQL server for the tests, started from Debian's binaries when present.

`postgres_binaries()` finds `initdb` and `pg_ctl` (on PATH or under
/usr/lib/postgresql/*/bin, where Debian's `postgresql` package puts them) or returns a
reason to skip. initdb refuses to run as root, so as root the cluster is created and
run as the `postgres` user through `runuser`. The cluster lives in a temporary folder,
listens on a free loopback port with trust auth, and is stopped with `-m immediate`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from service_harness import free_port


def postgres_binaries() -> tuple[Path, list[str]] | str:
    """(bin dir, command prefix to run them) or the reason they cannot be used."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [
        Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    ]
    bindir = next(
        (d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()), None
    )
    if bindir is None:
        return (
            "PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs Debian's postgresql"
        )
    if os.geteuid() != 0:
        return bindir, []
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "running as root and there is no 'postgres' user for initdb to run as"
    if runuser is None:
        return "running as root and runuser is missing, so initdb cannot drop root"
    return bindir, [runuser, "-u", "postgres", "--"]


class PostgresServer:
    def __init__(self, bindir: Path, prefix: list[str]) -> None:
        self.bindir, self.prefix = bindir, prefix
        self.dir = Path(tempfile.mkdtemp(prefix="kiln-pg-"))
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://kiln@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def start(self) -> PostgresServer:
        if self.prefix:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "kiln",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=60"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        data = self.dir / "data"
        if data.exists():
            subprocess.run(
                [
                    *self.prefix,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
