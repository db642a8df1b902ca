"""A local multi-node cluster of real `univrs node start` processes on loopback.

Used by ``scripts/cluster`` (demos, univrs/tools/cluster_cli.py), the chaos runner, the
benchmarks and the process tests. Each node gets a TOML config, a data dir and a log file
under one folder; its PID is recorded so ``stop`` can end exactly the processes it started.
Ports come from a base port (``plan``: node i listens for Raft on base+i and for its API on
base+100+i) or are picked free (``with_free_ports``; ``start_all`` then starts again on other
ports when another process took one before its node bound it: univrs/tools/started.py).

With ``tls`` (``scripts/cluster start`` unless ``--insecure``) the folder also gets a
``certs`` directory: a CA, one node certificate per node (127.0.0.1 and localhost), a client
certificate ``dev`` for the CLI (``scripts/cluster env`` prints the variables to use it),
and a join token; every node runs mutual TLS with them. ``scripts/cluster start`` also turns
API tokens on (``[auth] enabled = true``) and bootstraps the first admin token into
``certs/admin-token`` (mode 0600), which ``scripts/cluster env`` exports as ``UNIVRS_TOKEN``.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import attrs

from univrs.tools.polling import wait_for as wait_for  # re-exported: the tests and benches use it
from univrs.tools.ports import free_ports


@attrs.define(eq=False)
class NodeProc:
    """One node of a local cluster: its addresses, files and (when running) its process."""

    node_id: str
    raft_addr: str
    api_addr: str
    folder: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None
    ssl_context: ssl.SSLContext | None = None  # set by a TLS cluster: HTTPS to the API

    @property
    def config_path(self) -> pathlib.Path:
        return self.folder / f"{self.node_id}.toml"

    @property
    def data_dir(self) -> pathlib.Path:
        return self.folder / f"{self.node_id}-data"

    @property
    def log_path(self) -> pathlib.Path:
        return self.folder / f"{self.node_id}.log"

    @property
    def pid_path(self) -> pathlib.Path:
        return self.folder / f"{self.node_id}.pid"

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def get(self, path: str, timeout: float = 2.0) -> Any:
        """GET a JSON document from this node's API (raises OSError/ValueError on failure)."""
        scheme = "https" if self.ssl_context is not None else "http"
        url = f"{scheme}://{self.api_addr}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=self.ssl_context) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not): this node's ``/readyz`` (univrs/api/health.py)."""
        scheme = "https" if self.ssl_context is not None else "http"
        url = f"{scheme}://{self.api_addr}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2.0, context=self.ssl_context) as resp:
                return resp.status == 200, ""
        except urllib.error.HTTPError as exc:
            try:
                return False, str(json.load(exc).get("reason"))
            except ValueError:
                return False, f"/readyz answered {exc.code}"
        except (OSError, ValueError) as exc:
            return False, f"not answering ({exc})"

    def status(self) -> dict[str, Any] | None:
        """This node's own view (/v1/node/status), or None when it does not answer."""
        try:
            doc: dict[str, Any] = self.get("/v1/node/status", timeout=1.0)
            return doc
        except (OSError, ValueError):
            return None


def _folder_cluster_id(folder: pathlib.Path) -> str:
    """The cluster id of the local cluster kept in ``folder``: random the first time, then the
    same for every later ``scripts/cluster`` command (its data dirs belong to it)."""
    path = folder / "cluster-id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = _random_cluster_id()
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id + "\n")
    return cluster_id


def _random_cluster_id() -> str:
    return "local-" + secrets.token_hex(6)


@attrs.define(eq=False)
class LocalCluster:
    """A set of NodeProcs sharing a bootstrap configuration."""

    folder: pathlib.Path
    nodes: list[NodeProc]
    # Random per cluster (issue 12: two clusters never share an id by default).
    cluster_id: str = attrs.field(factory=_random_cluster_id)
    python: str = sys.executable
    extra_config: str = ""
    # Per-node ``[raft.dial]`` overrides: node id -> {peer id: "host:port"} (chaos proxies).
    dial: dict[str, dict[str, str]] = attrs.field(factory=dict)
    # False: no [raft.bootstrap] and no cluster id; every node starts as its own single-node
    # cluster, to be joined with `univrs cluster join`.
    bootstrap: bool = True
    # Nodes left out of the bootstrap list (configured like bootstrap=False), to be started
    # later with ``start(node, join=...)`` (chaos join scenarios).
    spares: frozenset[str] = frozenset()
    # Mutual TLS with certificates made in ``folder/certs`` (see the module docstring).
    tls: bool = False
    # ``[state] backend`` written into every node's config ("memory" or "lmdb"; None: the
    # node's default).
    state_backend: str | None = None
    # Ports picked by ``with_free_ports``: a fresh start may pick others (``start_all``).
    picked: bool = False

    @property
    def certs_dir(self) -> pathlib.Path:
        return self.folder / "certs"

    @property
    def join_token_path(self) -> pathlib.Path:
        return self.certs_dir / "join-token"

    @property
    def admin_token_path(self) -> pathlib.Path:
        return self.certs_dir / "admin-token"

    def bootstrap_admin_token(self, node: NodeProc) -> None:
        """With auth on: ask ``node`` for the cluster's first admin token (once in the
        cluster's life) and keep its secret in ``admin_token_path`` (0600)."""
        if self.admin_token_path.exists():
            return
        scheme = "https" if node.ssl_context is not None else "http"
        request = urllib.request.Request(
            f"{scheme}://{node.api_addr}/v1/tokens/bootstrap",
            data=json.dumps({"name": "scripts-cluster"}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30, context=node.ssl_context) as resp:
            secret = str(json.load(resp)["secret"])
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.admin_token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")

    def client_files(self, name: str = "dev") -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
        """(CA certificate, client certificate, key) of client ``name`` (made on demand)."""
        from univrs.net import certs

        cert, key = certs.client_files(self.certs_dir, name)
        if not cert.exists():
            certs.create_client(self.certs_dir, name)
        return self.certs_dir / certs.CA_CERT, cert, key

    def client_ssl(self, name: str = "dev") -> ssl.SSLContext | None:
        """A client context with client ``name``'s certificate (None without TLS)."""
        if not self.tls:
            return None
        from univrs.net.tls import client_context

        return client_context(*self.client_files(name))

    def make_certs(self) -> None:
        """Create the CA, every node's certificate, the dev client's and the join token (those
        that do not exist yet)."""
        from univrs.net import certs

        if not (self.certs_dir / certs.CA_CERT).exists():
            certs.create_ca(self.certs_dir)
        for n in self.nodes:
            if not certs.node_files(self.certs_dir, n.node_id)[0].exists():
                certs.create_node(self.certs_dir, n.node_id, ["127.0.0.1", "localhost"])
        self.client_files("dev")
        if not self.join_token_path.exists():
            fd = os.open(self.join_token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(16) + "\n")
        context = self.client_ssl()
        for n in self.nodes:
            n.ssl_context = context

    def _tls_toml(self, n: NodeProc) -> str:
        if not self.tls:
            return ""
        from univrs.net import certs

        cert, key = certs.node_files(self.certs_dir, n.node_id)
        return (
            "[tls]\n"
            f'ca_cert = "{self.certs_dir / certs.CA_CERT}"\n'
            f'cert = "{cert}"\n'
            f'key = "{key}"\n'
            "[join]\n"
            f'token_file = "{self.join_token_path}"\n'
        )

    @classmethod
    def plan(
        cls,
        folder: pathlib.Path,
        *,
        size: int = 3,
        base_port: int = 7100,
        extra_config: str = "",
        tls: bool = False,
    ) -> LocalCluster:
        folder = folder.resolve()
        nodes = [
            NodeProc(
                node_id=f"n{i}",
                raft_addr=f"127.0.0.1:{base_port + i}",
                api_addr=f"127.0.0.1:{base_port + 100 + i}",
                folder=folder,
            )
            for i in range(1, size + 1)
        ]
        cluster_id = _folder_cluster_id(folder)
        cluster = cls(
            folder=folder, nodes=nodes, extra_config=extra_config, tls=tls, cluster_id=cluster_id
        )
        if tls and (cluster.certs_dir / "ca.crt").exists():
            context = cluster.client_ssl()
            for n in nodes:
                n.ssl_context = context
        return cluster

    @classmethod
    def with_free_ports(
        cls,
        folder: pathlib.Path,
        *,
        size: int = 3,
        extra_config: str = "",
        spares: int = 0,
        tls: bool = False,
        state_backend: str | None = None,
    ) -> LocalCluster:
        """Like ``plan`` but with ports the kernel says are free now (for tests); ``spares``
        more nodes (ids after the members') are configured but not bootstrapped;
        ``state_backend``: the nodes' ``[state] backend`` (None: their default)."""
        folder = folder.resolve()
        nodes = [NodeProc(f"n{i + 1}", "", "", folder) for i in range(size + spares)]
        spare_ids = frozenset(n.node_id for n in nodes[size:])
        cluster = cls(
            folder=folder,
            nodes=nodes,
            extra_config=extra_config,
            spares=spare_ids,
            tls=tls,
            state_backend=state_backend,
            picked=True,
        )
        cluster.repick_ports()
        return cluster

    def repick_ports(self) -> None:
        """Free ports for every node (raft, API), written into the configs at the next start."""
        ports = free_ports(2 * len(self.nodes))
        for i, n in enumerate(self.nodes):
            n.raft_addr = f"127.0.0.1:{ports[2 * i]}"
            n.api_addr = f"127.0.0.1:{ports[2 * i + 1]}"

    def node(self, node_id: str) -> NodeProc:
        return next(n for n in self.nodes if n.node_id == node_id)

    def write_configs(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.make_certs()
        members = "\n".join(
            f'  {{ id = "{n.node_id}", addr = "{n.raft_addr}", api = "{n.api_addr}" }},'
            for n in self.nodes
            if n.node_id not in self.spares
        )
        for n in self.nodes:
            dial = self.dial.get(n.node_id, {})
            dial_toml = (
                "[raft.dial]\n" + "".join(f'"{p}" = "{a}"\n' for p, a in sorted(dial.items()))
                if dial
                else ""
            )
            bootstrapped = self.bootstrap and n.node_id not in self.spares
            boot = f"[raft.bootstrap]\nnodes = [\n{members}\n]\n" if bootstrapped else ""
            cluster = f'cluster_id = "{self.cluster_id}"\n' if bootstrapped else ""
            n.config_path.write_text(
                "[raft]\n"
                f'node_id = "{n.node_id}"\n'
                f"{cluster}"
                f'data_dir = "{n.data_dir}"\n'
                f'raft_addr = "{n.raft_addr}"\n'
                f"{self.extra_config}\n"
                f"{dial_toml}"
                f"{boot}"
                "[api]\n"
                f'addr = "{n.api_addr}"\n'
                f"{self._tls_toml(n)}"
                f"{self._state_toml()}"
            )

    def _state_toml(self) -> str:
        if self.state_backend is None:
            return ""
        return f'\n[state]\nbackend = "{self.state_backend}"\n'

    def start(
        self,
        node: NodeProc,
        *,
        log_level: str = "info",
        join: str | None = None,
        initial_cluster_state: str | None = None,
    ) -> None:
        """Start one node in the background (its output appends to its log file); with
        ``join`` (a member's API address) a new node joins that cluster; with
        ``initial_cluster_state="existing"`` an empty node waits to be joined."""
        assert not node.running(), f"{node.node_id} is already running"
        if not node.config_path.exists():
            self.write_configs()
        joining = ["--join", join] if join else []
        if initial_cluster_state is not None:
            joining += ["--initial-cluster-state", initial_cluster_state]
        with open(node.log_path, "ab") as logf:
            node.proc = subprocess.Popen(
                [self.python, "-m", "univrs", "node", "start", "--config", str(node.config_path),
                 "--log-level", log_level, *joining],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        node.pid_path.write_text(str(node.proc.pid))

    def start_all(self, **kw: Any) -> None:
        """Write the configs and start every node but the spares. A fresh bootstrapped cluster
        on picked ports returns once every member is up as itself, started again on other
        ports when another process took one of them before its node bound it
        (univrs/tools/started.py: ``NodeExited`` when that keeps happening; a node that exited
        for another reason is left for the caller to see, as before)."""
        from univrs.tools.started import NodeExited, start_fresh

        if not (self.picked and self.bootstrap) or any(n.data_dir.exists() for n in self.nodes):
            self.start_members(**kw)
            return
        try:
            start_fresh(self, **kw)
        except NodeExited as exc:
            if exc.port_taken:
                raise

    def start_members(self, **kw: Any) -> None:
        """Write the configs and start every node but the spares (``start``'s ``kw``)."""
        self.write_configs()
        for n in self.nodes:
            if n.node_id not in self.spares:
                self.start(n, **kw)

    def send_signal(self, node: NodeProc, sig: int) -> None:
        pid = node.pid
        if pid is not None and node.running():
            os.kill(pid, sig)

    def stop(
        self, node: NodeProc, *, sig: int = signal.SIGTERM, timeout: float = 15.0
    ) -> int | None:
        """Stop one node by PID (SIGTERM, then SIGKILL after ``timeout``); returns its exit
        code when we started it, else None."""
        pid = node.pid
        if pid is None or not node.running():
            node.pid_path.unlink(missing_ok=True)
            return node.proc.poll() if node.proc else None
        os.kill(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        os.kill(pid, sig)
        code: int | None = None
        try:
            code = wait_for(lambda: not node.running() or None, timeout, f"{node.node_id} exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not node.running() or None, 10.0, f"{node.node_id} killed")
        if node.proc is not None:
            code = node.proc.wait()
        node.proc = None
        node.pid_path.unlink(missing_ok=True)
        return code

    def restart(self, node: NodeProc, timeout: float = 60.0) -> None:
        """Stop a node (if it runs), start it again and return once it is ready (``/readyz``:
        it answers, knows a leader and has caught up); TimeoutError with its last reason."""
        self.stop(node)
        self.start(node)
        self.wait_ready([node], timeout)

    def wait_ready(self, nodes: list[NodeProc], timeout: float = 60.0) -> None:
        """Wait until every node of ``nodes`` answers ``/readyz`` with 200 (``NodeExited``
        for one that exited because another process holds its port)."""
        from univrs.tools.started import raise_if_port_taken

        for node in nodes:
            why = ["not asked yet"]

            def ready(node: NodeProc = node, why: list[str] = why) -> bool | None:
                raise_if_port_taken([node])  # at once, naming the port, not at the timeout
                ok, why[0] = node.readiness()
                return ok or None

            try:
                wait_for(ready, timeout, f"{node.node_id} to be ready")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; last /readyz: {why[0]}") from None

    def kill(self, node: NodeProc) -> None:
        """kill -9."""
        self.stop(node, sig=signal.SIGKILL)

    def stop_all(self) -> None:
        for n in self.nodes:
            self.stop(n)

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        return {n.node_id: n.status() if n.running() else None for n in self.nodes}

    def leader(self, among: list[NodeProc] | None = None) -> NodeProc | None:
        """The node that a majority of the running nodes (or ``among``) agree leads, if any."""
        nodes = among if among is not None else [n for n in self.nodes if n.running()]
        views = {n.node_id: n.status() for n in nodes}
        leaders = {v["id"]: v for v in views.values() if v and v["role"] == "leader"}
        for lid, view in leaders.items():
            agree = sum(
                1 for v in views.values() if v and v["leader"] == lid and v["term"] == view["term"]
            )
            if agree * 2 > len(self.nodes) or agree == len(nodes):
                return self.node(lid)
        return None

    def wait_leader(self, timeout: float = 30.0, among: list[NodeProc] | None = None) -> NodeProc:
        """The agreed leader (``leader``); ``NodeExited`` for a node that exited because
        another process holds its port (a restart on its ports), TimeoutError otherwise."""
        from univrs.tools.started import raise_if_port_taken

        def probe() -> NodeProc | None:
            raise_if_port_taken(among if among is not None else self.nodes)
            return self.leader(among)

        return wait_for(probe, timeout, "a leader")
