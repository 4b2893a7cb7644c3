"""A throwaway PostgreSQL cluster of a test's own, which it may stop and start at will.

`initdb` into a temporary directory, `pg_ctl start` on a free port of 127.0.0.1 with the unix
socket in that directory too: nothing is shared with the machine's own PostgreSQL service, which
a test must never stop. PostgreSQL refuses to run as root, so when we are root the binaries run
as the `postgres` user (`runuser`), which then owns the directory.

    with PgCluster.create() as cluster:   # skips (fails under CI=true) without the binaries
        url = cluster.url                 # postgresql://postgres@127.0.0.1:PORT/postgres
        cluster.stop()                    # pg_ctl stop -m fast: connections are cut
        cluster.start()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import free_port

_OWNER = "postgres"  # who runs the cluster when we are root


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (the newest installed), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    return None


def unavailable() -> str | None:
    """Why no cluster can be made here (None: it can)."""
    if find_binaries() is None:
        return "initdb/pg_ctl not found (/usr/lib/postgresql/*/bin or PATH)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (PostgreSQL refuses to run as root)"
        try:
            pwd.getpwnam(_OWNER)
        except KeyError:
            return f"running as root and there is no {_OWNER!r} user to run PostgreSQL as"
    return None


class PgCluster:
    def __init__(self, binaries: Path, root: Path, port: int) -> None:
        self.binaries = binaries
        self.root = root  # data/, the socket and the server log
        self.port = port
        self.data = root / "data"
        self.log = root / "server.log"

    @classmethod
    def create(cls) -> PgCluster:
        """A new cluster, initialised and running. Raises RuntimeError when that fails."""
        binaries = find_binaries()
        if binaries is None:
            raise RuntimeError(unavailable())
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        root = Path(tempfile.mkdtemp(prefix="yarigai-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_OWNER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        cluster = cls(binaries, root, free_port())
        try:
            # Fast and disposable: no fsync, trust on the socket and on 127.0.0.1 only.
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            cluster.start()
        except BaseException:
            cluster.remove()
            raise
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: every session is cut and the server stops (what a restart does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop it if it runs and delete everything."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.binaries / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _OWNER, "--", *command]
        return command

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            self._command(program, *args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}"
            )
