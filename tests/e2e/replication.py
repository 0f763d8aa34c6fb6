"""PostgreSQL streaming replication for the failover tests (issue 16): a standby made by
pg_basebackup from a running primary, synchronous or not, a primary killed as a crash
kills it, and a standby promoted."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path

import harness
from harness import PgServer

BINDIR = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) if glob.glob(
    "/usr/lib/postgresql/*/bin") else Path("/usr/bin")


def _as_postgres(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a server program as the postgres system user when we are root (pg.sh does so)."""
    argv = list(cmd)
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def standby_of(primary: PgServer, directory: Path, name: str = "standby1",
               synchronous: bool = True, port: int | None = None) -> PgServer:
    """A hot standby of `primary` streaming from it, started, listening where the primary
    does (on `port`, or a free one); with `synchronous`, every commit on the primary waits
    until the standby has flushed its WAL. `directory` may be a mount point."""
    directory = Path(directory)
    PgServer.clean_stale(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    _as_postgres(str(BINDIR / "pg_basebackup"), "-h", harness.LOOPBACK, "-p", str(primary.port),
                 "-U", "postgres", "-D", str(data), "-X", "stream", "-R", "--checkpoint=fast")
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"primary_conninfo = 'host={harness.LOOPBACK} port={primary.port} user=postgres"
                f" application_name={name}'\n")
    standby = PgServer(directory, port=port, also_listen=primary.also_listen)
    standby.start()
    if synchronous:
        with primary.connect("postgres") as c:
            c.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
            c.execute("SELECT pg_reload_conf()")
    state = "sync" if synchronous else "async"
    harness.wait_for(lambda: harness.query(primary.dsn("postgres"),
                                           "SELECT sync_state FROM pg_stat_replication"
                                           " WHERE application_name = %s", (name,))
                     == [(state,)], 60, what=f"the standby streaming ({state})")
    return standby


def kill_server(server: PgServer) -> None:
    """Every process of the server killed with SIGKILL at once, as a host crash ends it."""
    pidfile = server.dir / "data" / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        harness._kill_pid(pid, signal.SIGKILL)
    harness.wait_for(lambda: not harness._pid_alive(postmaster), 30,
                     what="the killed primary to be gone")
    server.running = False
    harness.unregister_cleanup(server._cleanup)


def promote(standby: PgServer) -> None:
    """The standby becomes a primary that takes writes."""
    _as_postgres(str(BINDIR / "pg_ctl"), "-D", str(standby.dir / "data"), "-w", "-t", "60",
                 "promote")
