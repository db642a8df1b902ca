"""``scripts/cluster start|stop|status|restart|kill|env``: a local cluster on fixed ports
(``--base-port``) kept in one folder (univrs/tools/devcluster.py).

Its ports are the user's choice, so a node whose port another process holds is no reason to pick
others: ``start`` and ``restart`` say which address is taken (the node's log) and exit 1, at once
rather than after the readiness timeout.
"""

from __future__ import annotations

import pathlib
import sys

from univrs.tools import devcluster
from univrs.tools.devcluster import LocalCluster
from univrs.tools.started import NodeExited

AUTH = "[auth]\nenabled = true\n"
"""The config lines of a cluster with API tokens on (``scripts/cluster start`` by default)."""


def main(argv: list[str] | None = None) -> int:
    """``scripts/cluster start|stop|status|restart [--nodes N] [--dir D] [--base-port P]``."""
    import argparse

    p = argparse.ArgumentParser(prog="scripts/cluster", description=devcluster.__doc__)
    p.add_argument("command", choices=["start", "stop", "status", "restart", "kill", "env"])
    p.add_argument("node", nargs="?", help="one node id (stop/kill/restart), default all")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--dir", default="cluster-data", help="folder for configs, data, logs")
    p.add_argument("--base-port", type=int, default=7100)
    p.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no API tokens (a new cluster only; an existing one keeps what its "
        "configs say)",
    )
    args = p.parse_args(argv)
    folder = pathlib.Path(args.dir)
    first = folder / "n1.toml"
    text = first.read_text() if first.exists() else None
    tls = "[tls]" in text if text is not None else not args.insecure
    auth = "[auth]" in text if text is not None else not args.insecure
    cluster = LocalCluster.plan(
        folder,
        size=args.nodes,
        base_port=args.base_port,
        tls=tls,
        extra_config=AUTH if auth else "",
    )
    if args.command == "env":
        return _print_env(cluster)
    chosen = [cluster.node(args.node)] if args.node else cluster.nodes
    if args.command in ("start", "restart"):
        for n in chosen:
            if args.command == "restart":
                cluster.stop(n)
            if n.running():
                print(f"{n.node_id}: already running (pid {n.pid})")
                continue
            if not n.config_path.exists():
                cluster.write_configs()
            cluster.start(n)
            print(f"{n.node_id}: started pid {n.pid}, raft {n.raft_addr}, api {n.api_addr}")
        try:
            # Return only once the nodes answer, know a leader and caught up (a restart
            # returned while the node was still starting).
            cluster.wait_ready(chosen, 60.0)
            leader = cluster.wait_leader(30.0)
            secured = "mutual TLS" if cluster.tls else "plaintext (--insecure)"
            if auth:
                cluster.bootstrap_admin_token(leader)
                secured += f", API tokens (admin token in {cluster.admin_token_path})"
            print(f"ready; leader: {leader.node_id} (api {leader.api_addr}); {secured}")
            if cluster.tls or auth:
                print(f'for the CLI: eval "$(scripts/cluster env --dir {args.dir})"')
        except TimeoutError as exc:
            print(f"not ready: {exc}; see the logs in {cluster.folder}")
            return 1
        except NodeExited as exc:
            print(f"not started: {exc}")
            print("another process holds that port: stop it or choose another --base-port")
            return 1
    elif args.command in ("stop", "kill"):
        for n in chosen:
            if args.command == "kill":
                cluster.kill(n)
            else:
                cluster.stop(n)
            print(f"{n.node_id}: stopped")
    else:
        for n in cluster.nodes:
            view = n.status() if n.running() else None
            if view is None:
                state = "running, not answering" if n.running() else "stopped"
                print(f"{n.node_id}: {state}   raft {n.raft_addr}  api {n.api_addr}")
            else:
                print(
                    f"{n.node_id}: {view['role']:<9} term {view['term']:<4} "
                    f"leader {view['leader'] or '-':<4} commit {view['commit_index']:<6} "
                    f"applied {view['applied_index']:<6} pid {n.pid}  api {n.api_addr}"
                )
    return 0


def _print_env(cluster: LocalCluster) -> int:
    """Shell lines that point the CLI at this cluster (its API and, with TLS, the dev client
    certificate)."""
    n1 = cluster.nodes[0]
    scheme = "https" if cluster.tls else "http"
    print(f"export UNIVRS_API={scheme}://{n1.api_addr}")
    if cluster.tls:
        ca, cert, key = cluster.client_files("dev")
        print(f"export UNIVRS_CA_CERT={ca}")
        print(f"export UNIVRS_CLIENT_CERT={cert}")
        print(f"export UNIVRS_CLIENT_KEY={key}")
        print(f"export UNIVRS_JOIN_TOKEN=$(cat {cluster.join_token_path})")
    if cluster.admin_token_path.exists():
        print(f"export UNIVRS_TOKEN=$(cat {cluster.admin_token_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
