"""Throwaway servers for tests: PostgreSQL for the tracking-server test, a free TCP port."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

PG_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if Path("/usr/lib/postgresql").exists()
    else None
)


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with database `mlflow` (user `mlflow`, trust
    authentication); yields its SQLAlchemy URI. Needs Debian's postgresql binaries (.ci/run)."""
    import tempfile

    pg_dir, pg_port = Path(tempfile.mkdtemp(prefix="study-pg-")), free_port()  # pytest's tmp is 0700
    pg_dir.chmod(0o755)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(pg_dir, "postgres")
    as_pg = ["su", "postgres", "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
    subprocess.run([*as_pg, f"{PG_BIN}/initdb -D {pg_dir}/data -A trust -U mlflow >/dev/null"], check=True)
    subprocess.run(
        [
            *as_pg,
            f"{PG_BIN}/pg_ctl -D {pg_dir}/data -l {pg_dir}/log -w -o '-h 127.0.0.1 -p {pg_port} "
            f"-k {pg_dir}' start >/dev/null",
        ],
        check=True,
    )
    try:
        subprocess.run(
            [f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "mlflow"], check=True
        )
        yield f"postgresql+psycopg2://mlflow:secret@127.0.0.1:{pg_port}/mlflow"
    finally:
        subprocess.run([*as_pg, f"{PG_BIN}/pg_ctl -D {pg_dir}/data -m immediate stop >/dev/null"], check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
