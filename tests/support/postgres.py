"""A real PostgreSQL server for a test, from Debian's packages (``postgresql-15``, installed by ``make setup-system``).

``PostgresServer.start()`` sets a cluster up the way k8s/mlflow/postgres.yaml's container does: the image's entrypoint
(docker-library/postgres, 16/bookworm/docker-entrypoint.sh: ``docker_init_database_dir`` runs
``initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\\n" "$POSTGRES_PASSWORD")``, ``docker_setup_db`` creates
``$POSTGRES_DB`` unless it is ``postgres``, ``pg_setup_hba_conf`` allows ``host all all all scram-sha-256``), so the
database ``mlflow`` belongs to the bootstrap superuser ``mlflow`` with the password of the ``mlflow-db`` Secret, and
TCP clients log in with that password. Debian's 15 stands in for the image's 16: the server side MLflow uses (SQL,
scram-sha-256 logins) is the same in both.

The cluster lives in a fresh directory under the system temp directory owned by Debian's ``postgres`` user (initdb
refuses to run as root; pytest's own tmp folders are ``0700 root``), the server listens on ``127.0.0.1`` on a free
port and on a socket in that directory only, and ``stop()`` (or leaving the ``with`` block) stops it fast and removes
the directory. A missing binary fails with the command that installs it: never a skip.

The fixture ``postgres`` (loaded through ``pytest_plugins``) gives one such server per test module.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # Debian's postgresql-common creates it
DB_USER = "mlflow"  # k8s/mlflow/postgres.yaml: POSTGRES_USER
DB_NAME = "mlflow"  # k8s/mlflow/postgres.yaml: POSTGRES_DB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster with the database and login of k8s/mlflow/postgres.yaml; ``host``/``port``/``password``
    are what a client needs."""

    def __init__(self, password: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = DB_USER
        self.database = DB_NAME
        self.password = password or secrets.token_urlsafe(16)
        self.root: Path | None = None

    # ---------------------------------------------------------------------------------------------- control
    def _as_owner(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary as the cluster's owner: Debian's ``postgres`` user when we are root."""
        argv = [str(PG_BIN / cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", OS_USER, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def start(self) -> PostgresServer:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"{PG_BIN}/initdb is missing: install Debian's postgresql (make setup-system, as root)")
        self.root = Path(tempfile.mkdtemp(prefix="mlflow-anf-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        data = self.root / "data"
        try:
            self._as_owner("initdb", "-D", str(data), f"--username={self.user}", f"--pwfile={pwfile}",
                           "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync")
            pwfile.unlink()
            opts = (f"-c listen_addresses={self.host} -p {self.port} -k {self.root} -c fsync=off "
                    "-c full_page_writes=off -c synchronous_commit=off")
            self._as_owner("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                           "-t", "60", "start")
            self._as_owner("createdb", "-h", str(self.root), "-p", str(self.port), "-U", self.user, self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.root / "data" / "postmaster.pid").exists():
            self._as_owner("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def log(self) -> str:
        path = self.root / "server.log" if self.root else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL with k8s/mlflow/postgres.yaml's database and login, for the test module."""
    with PostgresServer() as server:
        yield server
