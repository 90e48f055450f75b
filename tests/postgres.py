"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, a Unix socket only.

Uses the server programs of Debian's postgresql package (.ci/run installs it). As root, the server runs
as the postgres user, which PostgreSQL requires; otherwise as the current user.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server programs not found: apt-get install postgresql (see .ci/run)")


class Server:
    def __init__(self, root: Path):
        self.bin = _bin_dir()
        self.root = root
        self.data = root / "data"
        self.socket = root / "socket"
        self.port = 5432 + os.getpid() % 1000  # the socket file's name; nothing listens on TCP
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-500:]}")

    def start(self) -> "Server":
        self.socket.mkdir(parents=True)
        if self._as:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket, "postgres")
        # An ICU English collation, as most real databases have (not byte order): prefix and range
        # conditions must hold under it
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en")
        options = f"-k {self.socket} -p {self.port} -c listen_addresses='' -c fsync=off -c max_connections=300"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except RuntimeError:
            pass

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket}&port={self.port}"

    def new_database(self) -> str:
        """A fresh empty database's URL."""
        from sqlalchemy import create_engine, text
        name = "t_" + uuid.uuid4().hex[:12]
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        for attempt in range(50):
            try:
                with engine.connect() as connection:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                break
            except Exception:  # the server may still be coming up
                if attempt == 49:
                    raise
                time.sleep(0.1)
        engine.dispose()
        return self.url(name)

