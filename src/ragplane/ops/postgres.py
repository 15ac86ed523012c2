"""PostgreSQL as a local process: the ingestion jobs' store (gateway/jobs_store.py) of the
one-machine stack and the tests, started like Milvus Lite.

PostgreSQL 15 from Debian (`apt-get install postgresql`): every gateway replica shares
one real database, rows are claimed with `FOR UPDATE SKIP LOCKED`, and the same DSN
points at a managed PostgreSQL in a cluster. The cluster is made once (initdb) in the
state dir, owned by a password-protected role `ragplane`, and listens on loopback TCP
only (no Unix socket: a state dir's path can be longer than a socket's may be).

initdb and postgres refuse to run as root. Run as root (CI, containers), they run as
the `postgres` user Debian's package creates (RAGPLANE_POSTGRES_USER), through setpriv,
keeping only CAP_DAC_READ_SEARCH so that they can reach a data dir under a root-only
folder (pytest's /tmp/pytest-of-root).

Run as `python -m ragplane.ops.postgres DATA_DIR HOST PORT PASSWORD_FILE`: makes the
cluster if there is none, then becomes postgres (exec: the supervisor's pid is its pid).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from ragplane.ops import processes

DEFAULT_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"),)
ROLE = "ragplane"
DATABASE = "postgres"
DEFAULT_START_TIMEOUT_S = 60.0


def bin_dir() -> Path:
    """Where initdb and postgres are: RAGPLANE_POSTGRES_BIN_DIR, else Debian's."""
    configured = os.environ.get("RAGPLANE_POSTGRES_BIN_DIR")
    for candidate in [Path(configured)] if configured else DEFAULT_BIN_DIRS:
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise processes.StartError(
        "PostgreSQL 15 is not installed (the ingestion jobs' store): "
        "`apt-get install postgresql`, or set RAGPLANE_POSTGRES_BIN_DIR"
    )


def installed() -> bool:
    """Whether PostgreSQL's binaries are found (bin_dir)."""
    try:
        bin_dir()
    except processes.StartError:
        return False
    return True


def password(password_file: Path) -> str:
    """The role's password, made once and kept (mode 0600) beside the cluster."""
    if not password_file.exists():
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return password_file.read_text().strip()


def dsn(host: str, port: int, password_file: Path) -> str:
    """The DSN the gateways get (RAGPLANE_GATEWAY_JOBS_DSN)."""
    return f"postgresql://{ROLE}:{password(password_file)}@{host}:{port}/{DATABASE}"


def command(data_dir: Path, host: str, port: int, password_file: Path) -> list[str]:
    """The supervisor's command line: this module, which makes the cluster once."""
    return [
        sys.executable,
        "-m",
        "ragplane.ops.postgres",
        str(data_dir),
        host,
        str(port),
        str(password_file),
    ]


def _as_user() -> list[str]:
    """The prefix that drops root for initdb and postgres; none when not root."""
    if os.geteuid() != 0:
        return []
    user = os.environ.get("RAGPLANE_POSTGRES_USER", "postgres")
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={pwd.getpwnam(user).pw_gid}",
        "--init-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(os.environ.get("RAGPLANE_POSTGRES_USER", "postgres"))
        os.chown(path, user.pw_uid, user.pw_gid)


def initdb(data_dir: Path, password_file: Path) -> None:
    """Makes the cluster unless data_dir holds one already."""
    if (data_dir / "PG_VERSION").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _own(data_dir)
    secret = password(password_file)
    # initdb reads the password from a file its own user can read, removed after.
    pwfile = data_dir.parent / f".{data_dir.name}.pwfile"
    pwfile.write_text(secret + "\n")
    pwfile.chmod(0o600)
    _own(pwfile)
    try:
        subprocess.run(
            [
                *_as_user(),
                str(bin_dir() / "initdb"),
                "--pgdata",
                str(data_dir),
                "--username",
                ROLE,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def server_argv(data_dir: Path, host: str, port: int) -> list[str]:
    return [
        *_as_user(),
        str(bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-h",
        host,
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]


async def start_postgres(
    data_dir: Path,
    port: int,
    log: Path,
    *,
    host: str = processes.LOOPBACK,
    within_s: float = DEFAULT_START_TIMEOUT_S,
) -> tuple[processes.Process, str]:
    """Starts PostgreSQL (making the cluster first if needed) and returns it and its DSN
    once it accepts connections; the tests' and benchmarks' way in."""
    password_file = data_dir.parent / f"{data_dir.name}.password"
    proc = processes.start_process(
        command(data_dir, host, port, password_file), log, name="PostgreSQL"
    )
    try:
        await proc.wait_accepting(host, port, within_s)
    except BaseException:
        proc.stop(timeout=5.0)
        raise
    return proc, dsn(host, port, password_file)


def main(argv: list[str] | None = None) -> None:
    data_dir, host, port, password_file = sys.argv[1:] if argv is None else argv
    initdb(Path(data_dir), Path(password_file))
    args = server_argv(Path(data_dir), host, int(port))
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
