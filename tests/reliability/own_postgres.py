"""A PostgreSQL cluster a test owns, so it can stop and start the server under running processes.

``initdb`` into a fresh temporary directory, ``pg_ctl start`` on a free port of 127.0.0.1 with trust
auth. PostgreSQL refuses to run as root, so as root the commands run as the ``postgres`` user
(``runuser``) and the directory is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import free_port

PG_BIN = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([*PG_BIN, os.environ.get("PATH", "")]))


class OwnPostgres:
    def __init__(self) -> None:
        initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("initdb/pg_ctl not found (PostgreSQL server binaries)")
        self.pg_ctl = pg_ctl
        self.as_user: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="gr-own-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run the server as")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(self.pg_ctl, "start", "-w", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "stop", "-w", "-D", str(self.data), "-m", mode)

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        except OSError:
            return ""

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, self.pg_ctl, "stop", "-w", "-D", str(self.data), "-m", "immediate"],
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
