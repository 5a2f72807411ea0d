"""Hosts with network stacks of their own, and a PostgreSQL cluster of the tests' own between them.

Each host is a network namespace (``ip netns``) joined to a bridge in the root namespace by a
veth pair, on a private /24 that nothing else on the machine uses; a command run "on" a host
also gets a UTS namespace, so its ``hostname`` (and the ``host`` queuectl records) is the host's
name. The cluster is made with the installed server's ``initdb`` as the ``postgres`` user in a
temporary folder and listens on the bridge's address only: the machine's own server is left alone.

Everything a run makes carries its run id (``qh`` and six hex digits) and the temporary folder
records the pid of the process that made it: a later run removes what a crashed run left behind,
and never what a run still alive is using.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

#: Names of namespaces, links and folders begin with this, then the run id.
PREFIX = "qh"
#: The /24s the hosts' network is taken from: ``10.213.N.0/24`` for the first N unused.
SUBNET_BASE = "10.213"
FOLDER_PREFIX = "queuectl-hosts-"
_RUN_ID = re.compile(rf"^{PREFIX}([0-9a-f]{{6}})")
_STEP_TIMEOUT = 60.0


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; a failure names the command and what it said."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_STEP_TIMEOUT, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


# --- can hosts be made here? ------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The installed server's programs (``initdb``, ``pg_ctl``): the newest version's."""
    found = []
    if shutil.which("pg_config"):
        done = sh("pg_config", "--bindir", check=False)
        if done.returncode == 0:
            found.append(Path(done.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))
    found += [Path(path) for path in reversed(versions)]
    for bindir in found:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def cluster_unavailable() -> str | None:
    """Why a private PostgreSQL cluster cannot be made here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "a private cluster needs root (initdb runs as postgres)"
    if shutil.which("runuser") is None:
        return "a private cluster needs runuser: apt-get install util-linux"
    if importlib.util.find_spec("asyncpg") is None:
        return "the store is PostgreSQL: pip install -e '.[postgres]'"
    if postgres_bindir() is None:
        return "a private cluster needs initdb and pg_ctl: apt-get install postgresql"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "initdb must run as the postgres user, and there is none"
    return None


def unavailable() -> str | None:
    """Why hosts cannot be made on this machine (a skip reason), or None."""
    if os.uname().sysname != "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making hosts needs root (ip netns, veth pairs, initdb as postgres)"
    for program, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(program) is None:
            return f"making hosts needs {program}: apt-get install {package}"
    reason = cluster_unavailable()
    if reason is not None:
        return reason
    probe = f"{PREFIX}probe{uuid.uuid4().hex[:6]}"
    made = sh("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


# --- what a crashed run left behind -----------------------------------------------------------------


def _folder(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{FOLDER_PREFIX}{run_id}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_alive(run_id: str) -> bool:
    try:
        return _alive(int((_folder(run_id) / "owner").read_text()))
    except (OSError, ValueError):
        return False


def kill_namespace_processes(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` (what a test started there: workers, their jobs)."""
    listed = sh("ip", "netns", "pids", namespace, check=False)
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def remove_namespace(namespace: str) -> None:
    kill_namespace_processes(namespace)
    sh("ip", "netns", "del", namespace, check=False)


def remove_stale() -> None:
    """Remove the namespaces, links, clusters and folders of earlier runs whose process is gone."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        found = _RUN_ID.match(name)
        if found and not _run_alive(found.group(1)):
            remove_namespace(name)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().partition("@")[0] if ":" in line else ""
        found = _RUN_ID.match(name)
        if found and not _run_alive(found.group(1)):
            sh("ip", "link", "del", name, check=False)
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        run_id = folder.name.removeprefix(FOLDER_PREFIX)
        if not _run_alive(run_id):
            bindir = postgres_bindir()
            if bindir is not None and (folder / "pg" / "data" / "postmaster.pid").exists():
                Cluster(folder, bindir, "", 0).stop()
            shutil.rmtree(folder, ignore_errors=True)


# --- the network ---------------------------------------------------------------------------------------


@dataclass
class Host:
    """One host: a network namespace with ``address`` on the bridge through the veth ``link``."""

    name: str
    namespace: str
    address: str
    link: str  # the bridge's end of the host's veth pair: taken down, the host is cut off

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host: in its namespace, with its name as the hostname."""
        sets_name = 'hostname "$0" && exec "$@"'
        unshare = ["unshare", "--uts", "--", "sh", "-c", sets_name, self.name]
        return ["ip", "netns", "exec", self.namespace, *unshare, *argv]

    def cut(self) -> None:
        """Unplug the host: its packets go nowhere, its connections stay open at both ends."""
        sh("ip", "link", "set", self.link, "down")

    def reconnect(self) -> None:
        sh("ip", "link", "set", self.link, "up")

    def unsent_bytes(self) -> int:
        """Bytes this host's sockets have sent that the other end has not acknowledged."""
        listed = sh("ip", "netns", "exec", self.namespace, "ss", "-Htn", check=False)
        return sum(int(line.split()[2]) for line in listed.stdout.splitlines() if len(line.split()) > 2)

    def kill_everything(self) -> None:
        kill_namespace_processes(self.namespace)


def _free_subnet() -> ipaddress.IPv4Network:
    """The first ``10.213.N.0/24`` that no address or route of this machine touches."""
    used = []
    for listing in (("ip", "-4", "-o", "addr", "show"), ("ip", "-4", "route", "show", "table", "all")):
        for word in sh(*listing, check=False).stdout.split():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(word, strict=False))
    for third in range(256):
        candidate = ipaddress.IPv4Network(f"{SUBNET_BASE}.{third}.0/24")
        if not any(candidate.overlaps(network) for network in used if network.prefixlen > 0):
            return candidate
    raise RuntimeError(f"no free /24 in {SUBNET_BASE}.0.0/16 for the test hosts")


@dataclass
class Network:
    """A bridge with ``gateway`` (the database's address) and the hosts around it."""

    run_id: str
    bridge: str
    gateway: str
    hosts: list[Host]
    _undo: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def create(cls, run_id: str, count: int) -> Network:
        subnet = _free_subnet()
        addresses = list(subnet.hosts())
        bridge = f"{PREFIX}{run_id}br"
        network = cls(run_id, bridge, str(addresses[0]), [])
        try:
            sh("ip", "link", "add", bridge, "type", "bridge")
            network._undo.append(lambda: sh("ip", "link", "del", bridge, check=False))
            sh("ip", "addr", "add", f"{network.gateway}/{subnet.prefixlen}", "dev", bridge)
            sh("ip", "link", "set", bridge, "up")
            for number in range(1, count + 1):
                network.hosts.append(network._add_host(number, str(addresses[9 + number]), subnet.prefixlen))
        except BaseException:
            network.remove()
            raise
        return network

    def _add_host(self, number: int, address: str, prefixlen: int) -> Host:
        namespace = f"{PREFIX}{self.run_id}-host{number}"
        outside, inside = f"{PREFIX}{self.run_id}v{number}", f"{PREFIX}{self.run_id}p{number}"
        sh("ip", "netns", "add", namespace)
        self._undo.append(lambda: remove_namespace(namespace))
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self._undo.append(lambda: sh("ip", "link", "del", outside, check=False))
        sh("ip", "link", "set", inside, "netns", namespace)
        sh("ip", "link", "set", outside, "master", self.bridge, "up")
        inns = ("ip", "netns", "exec", namespace, "ip")
        sh(*inns, "link", "set", "lo", "up")
        sh(*inns, "link", "set", inside, "name", "eth0")
        sh(*inns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
        sh(*inns, "link", "set", "eth0", "up")
        return Host(name=f"host{number}", namespace=namespace, address=address, link=outside)

    def remove(self) -> None:
        """Undo everything, last made first, carrying on past failures."""
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()


# --- the cluster ---------------------------------------------------------------------------------------


def _free_port(address: str) -> int:
    """PostgreSQL's usual port on ``address`` unless something holds it for every address."""
    ports: list[int] = [5432, *range(55432, 55532)]
    for port in ports:
        with socket.socket() as probe:
            # As the server binds: connections of an earlier cluster in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {address} for the test cluster")


@dataclass
class Cluster:
    """A PostgreSQL cluster in ``folder/pg``, owned by ``postgres``, on ``address:port`` only."""

    folder: Path
    bindir: Path
    address: str
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "pg" / "data"

    @classmethod
    def create(cls, folder: Path, bindir: Path, address: str, subnet: str) -> Cluster:
        home = folder / "pg"
        home.mkdir(mode=0o700)
        shutil.chown(home, "postgres", "postgres")
        cluster = cls(folder, bindir, address, _free_port(address))
        cluster._as_postgres(
            "initdb", "-D", str(cluster.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{address}'\nport = {cluster.port}\n"
                f"unix_socket_directories = '{home}'\nlogging_collector = off\n"
            )
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {subnet} trust\n")
        cluster.start()
        return cluster

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/{database}"

    def _as_postgres(self, program: str, *args: str) -> None:
        sh("runuser", "-u", "postgres", "--", str(self.bindir / program), *args)

    def _pg_ctl(self, *args: str) -> None:
        log = str(self.folder / "pg" / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", *args)

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("restart", "-m", mode)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._pg_ctl("stop", "-m", "immediate")

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"qh_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, statement: str) -> None:
        asyncio.run(self._admin(lambda connection: connection.execute(statement)))

    def now(self) -> datetime:
        """The database's clock."""
        moment = asyncio.run(self._admin(lambda connection: connection.fetchval("SELECT clock_timestamp()")))
        assert isinstance(moment, datetime)
        return moment

    async def _admin(self, work: Callable[[Any], Any]) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self.url())
        try:
            awaited = work(connection)
            return await awaited if asyncio.iscoroutine(awaited) else awaited
        finally:
            await connection.close()


@contextlib.contextmanager
def loopback_cluster() -> Iterator[Cluster]:
    """A private cluster on 127.0.0.1 (a port of its own), for a test that restarts its server:
    the machine's own server, which other tests use meanwhile, is left alone."""
    folder = Path(tempfile.mkdtemp(prefix="queuectl-cluster-"))
    folder.chmod(0o755)  # the postgres user goes through it
    cluster = None
    try:
        bindir = postgres_bindir()
        assert bindir is not None  # ``cluster_unavailable`` said so
        cluster = Cluster.create(folder, bindir, "127.0.0.1", "127.0.0.1/32")
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- all of it ---------------------------------------------------------------------------------------------


@dataclass
class Lab:
    """The hosts, their network and the cluster on it; ``remove`` undoes all of it."""

    network: Network
    cluster: Cluster | None
    folder: Path

    @property
    def hosts(self) -> list[Host]:
        return self.network.hosts

    @classmethod
    def create(cls, count: int) -> Lab:
        remove_stale()
        run_id = uuid.uuid4().hex[:6]
        folder = _folder(run_id)
        folder.mkdir(mode=0o755)
        (folder / "owner").write_text(str(os.getpid()))
        lab = cls(Network(run_id, "", "", []), None, folder)
        try:
            lab.network = Network.create(run_id, count)
            bindir = postgres_bindir()
            assert bindir is not None  # ``unavailable`` said so
            subnet = str(ipaddress.ip_network(f"{lab.network.gateway}/24", strict=False))
            lab.cluster = Cluster.create(folder, bindir, lab.network.gateway, subnet)
        except BaseException:
            lab.remove()
            raise
        return lab

    def reset(self) -> None:
        """Between tests: every host plugged in, nothing left running on any."""
        for host in self.hosts:
            host.kill_everything()
            sh("ip", "link", "set", host.link, "up", check=False)
        deadline = time.monotonic() + _STEP_TIMEOUT
        while any(
            sh("ip", "netns", "pids", host.namespace, check=False).stdout.split() for host in self.hosts
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("processes on the test hosts would not die")
            time.sleep(0.02)

    def remove(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.network.remove()
        shutil.rmtree(self.folder, ignore_errors=True)
