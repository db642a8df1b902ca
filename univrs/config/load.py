"""Reading a node's configuration: a TOML file (``[raft]``, ``[raft.bootstrap]``, ``[api]``,
``[tls]``, ``[join]``, ``[auth]``, ``[limits]``, ``[state]``) plus flags, into a ``NodeConfig``.

``load_config(path, overrides)`` reads the file (or nothing: the embedded single-node defaults),
applies command-line overrides on top, and returns a validated, frozen ``NodeConfig``. Every
problem is a ``univrs.errors.ConfigError`` whose message names the key (``raft.node_id``,
``raft.bootstrap.nodes[2].addr``) and says what is wrong; unknown keys come with the closest
known key as a suggestion. ``docs/config.md`` documents every key.
"""

from __future__ import annotations

import contextlib
import difflib
import pathlib
import tomllib
from collections.abc import Mapping
from typing import Any

import attrs

from univrs.config.model import DEFAULT_RAFT_HOST, BootstrapNode, NodeConfig
from univrs.errors import ConfigError
from univrs.net.address import split_host_port
from univrs.net.tls import CLIENT_AUTH_MODES, TlsFiles

_INT = "integer"
_STR = "string"
_TABLE = "table"
_ARRAY = "array"
_BOOL = "boolean"
_NUMBER = "number"

# key -> expected TOML type, per table. ``None`` defaults come from NodeConfig.
_TOP_KEYS = {
    "raft": _TABLE,
    "api": _TABLE,
    "tls": _TABLE,
    "join": _TABLE,
    "auth": _TABLE,
    "limits": _TABLE,
    "state": _TABLE,
}
_RAFT_KEYS = {
    "node_id": _STR,
    "cluster_id": _STR,
    "initial_cluster_token": _STR,
    "data_dir": _STR,
    "raft_addr": _STR,
    "raft_port": _INT,
    "heartbeat_interval_ms": _INT,
    "election_timeout_min_ms": _INT,
    "election_timeout_max_ms": _INT,
    "read_lease": _BOOL,
    "lease_drift_ms": _INT,
    "snapshot_threshold": _INT,
    "snapshot_max_chunk_size": _INT,
    "snapshot_trailing_entries": _INT,
    "snapshot_scrub_interval_ms": _INT,
    "snapshot_scrub_rate": _INT,
    "max_payload_size": _INT,
    "max_snapshot_bytes": _INT,
    "watch_history": _INT,
    "watch_max_watchers": _INT,
    "node_ttl_ms": _INT,
    "reconcile_resync_ms": _INT,
    "batch_entries": _BOOL,
    "batch_gather_ms": _INT,
    "inline_write_bytes": _INT,
    "bootstrap": _TABLE,
    "dial": _TABLE,
    "initial_cluster_state": _STR,
}
_BOOTSTRAP_KEYS = {"nodes": _ARRAY}
_NODE_KEYS = {"id": _STR, "addr": _STR, "api": _STR}
_NODE_REQUIRED = ("id", "addr")
_API_KEYS = {"addr": _STR}
_AUTH_KEYS = {"enabled": _BOOL}
_STATE_KEYS = {"backend": _STR}
_LIMITS_KEYS = {
    "max_body_bytes": _INT,
    "max_json_depth": _INT,
    "max_connections_per_address": _INT,
    "session_open_rate": _NUMBER,
    "session_open_burst": _INT,
    "quota_backend_bytes": _INT,
}
_TLS_KEYS = {
    "ca_cert": _STR,
    "cert": _STR,
    "key": _STR,
    "client_auth": _STR,
    "insecure": _BOOL,
}
_JOIN_KEYS = {"token": _STR, "token_file": _STR}

# Override names accepted besides dotted paths: NodeConfig-style flat names for CLI flags.
_FLAT_OVERRIDES = {
    **{k: f"raft.{k}" for k in _RAFT_KEYS if k != "bootstrap"},
    "api_addr": "api.addr",
    "bootstrap": "raft.bootstrap.nodes",
    **{k: f"tls.{k}" for k in _TLS_KEYS},
    "join_token": "join.token",
    "join_token_file": "join.token_file",
    "auth_enabled": "auth.enabled",
    "state_backend": "state.backend",
    **{k: f"limits.{k}" for k in _LIMITS_KEYS},
}
_DOTTED_OVERRIDES = set(_FLAT_OVERRIDES.values())


def load_config(
    path: str | pathlib.Path | None = None, overrides: Mapping[str, Any] | None = None
) -> NodeConfig:
    """Read ``path`` (None: defaults only), apply ``overrides``, validate, return the config.

    ``overrides`` maps option names to values; flags win over the file. Names are dotted
    paths (``"raft.node_id"``, ``"api.addr"``, ``"raft.bootstrap.nodes"``) or flat names
    (``"node_id"``, ``"raft_addr"``, ``"api_addr"``, ``"bootstrap"``, ...). ``None`` values are
    ignored (an unset flag). A bootstrap override may be a list of ``{"id", "addr"}`` tables or
    a string ``"id=host:port,id=host:port"``.
    """
    source = str(path) if path is not None else "defaults"
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
        except UnicodeDecodeError as exc:  # TOML is UTF-8: a binary or Latin-1 file
            raise ConfigError(
                f"{source}: not UTF-8 text (byte {exc.start}: {exc.reason}); is it a TOML file?"
            ) from None
    if overrides:
        _apply_overrides(doc, overrides)
        source = f"{source} + command line"
    problems: list[str] = []
    kwargs = _collect(doc, problems)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    try:
        return NodeConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{source}: {p}" for p in str(exc).splitlines())) from None


def parse_bootstrap(text: str) -> list[dict[str, str]]:
    """Parse a ``--bootstrap`` flag: ``"n1=10.0.0.1:7000,n2=10.0.0.2:7000"``."""
    nodes = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        node_id, sep, addr = item.partition("=")
        if not sep or not node_id.strip() or not addr.strip():
            raise ConfigError(f"bootstrap: item {i + 1} {item!r} is not 'id=host:port'")
        nodes.append({"id": node_id.strip(), "addr": addr.strip()})
    return nodes


def _apply_overrides(doc: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for name, value in overrides.items():
        if value is None:
            continue
        dotted = _FLAT_OVERRIDES.get(name, name)
        if dotted not in _DOTTED_OVERRIDES:
            known = sorted(set(_FLAT_OVERRIDES) | _DOTTED_OVERRIDES)
            raise ConfigError(f"command line: unknown option {name!r}{_suggest(name, known)}")
        if dotted == "raft.bootstrap.nodes" and isinstance(value, str):
            value = parse_bootstrap(value)
        if isinstance(value, pathlib.Path):
            value = str(value)
        *tables, key = dotted.split(".")
        target = doc
        for t in tables:
            nxt = target.setdefault(t, {})
            if not isinstance(nxt, dict):
                nxt = target[t] = {}
            target = nxt
        target[key] = value
        # The listen address may be given two ways; the flag replaces whichever the file used.
        if dotted == "raft.raft_addr":
            target.pop("raft_port", None)
        elif dotted == "raft.raft_port":
            target.pop("raft_addr", None)
        elif dotted == "join.token":
            target.pop("token_file", None)
        elif dotted == "join.token_file":
            target.pop("token", None)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return _STR
    if isinstance(value, list):
        return _ARRAY
    if isinstance(value, dict):
        return _TABLE
    return type(value).__name__


def _check_table(
    table: Mapping[str, Any], schema: Mapping[str, str], prefix: str, problems: list[str]
) -> dict[str, Any]:
    """The entries of ``table`` whose key is known and whose type is right; report the rest."""
    good = {}
    for key, value in table.items():
        where = f"{prefix}{key}"
        expected = schema.get(key)
        if expected is None:
            known = [f"{prefix}{k}" for k in schema]
            problems.append(f"{where}: unknown key{_suggest(where, known)}")
        elif _type_name(value) != expected and not (
            expected == _NUMBER and _type_name(value) in (_INT, "float")
        ):
            shown = f" {value!r}" if not isinstance(value, dict | list) else ""
            problems.append(f"{where}: expected {_a(expected)}, got {_type_name(value)}{shown}")
        else:
            good[key] = value
    return good


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _collect(doc: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """NodeConfig keyword arguments from a parsed document (type-checked), or problems."""
    top = _check_table(doc, _TOP_KEYS, "", problems)
    raft = _check_table(top.get("raft", {}), _RAFT_KEYS, "raft.", problems)
    api = _check_table(top.get("api", {}), _API_KEYS, "api.", problems)
    auth = _check_table(top.get("auth", {}), _AUTH_KEYS, "auth.", problems)
    limits = _check_table(top.get("limits", {}), _LIMITS_KEYS, "limits.", problems)
    state = _check_table(top.get("state", {}), _STATE_KEYS, "state.", problems)
    kwargs: dict[str, Any] = {}
    if "backend" in state:
        kwargs["state_backend"] = state["backend"]
    _collect_security(top, kwargs, problems)
    kwargs.update(
        {k: v for k, v in raft.items() if k not in ("bootstrap", "raft_addr", "raft_port", "dial")}
    )
    if "dial" in raft:
        dial = raft["dial"]
        for nid, addr in dial.items():
            if not isinstance(addr, str):
                problems.append(
                    f"raft.dial.{nid}: expected a string host:port, got {_type_name(addr)}"
                )
        kwargs["dial"] = tuple(sorted((str(k), v) for k, v in dial.items() if isinstance(v, str)))
    if "data_dir" in kwargs:
        if not kwargs["data_dir"].strip():
            problems.append("raft.data_dir: must not be empty")
        _check_path("raft.data_dir", kwargs["data_dir"], problems)
        kwargs["data_dir"] = pathlib.Path(kwargs["data_dir"])
    if "addr" in api:
        kwargs["api_addr"] = api["addr"]
    if "enabled" in auth:
        kwargs["auth_enabled"] = auth["enabled"]
    kwargs.update(limits)

    nodes: list[BootstrapNode] = []
    if "bootstrap" in raft:
        boot = _check_table(raft["bootstrap"], _BOOTSTRAP_KEYS, "raft.bootstrap.", problems)
        raw_nodes = boot.get("nodes")
        if raw_nodes is None and "nodes" not in raft["bootstrap"]:
            problems.append("raft.bootstrap.nodes: missing (list the initial members)")
        for i, item in enumerate(raw_nodes or []):
            where = f"raft.bootstrap.nodes[{i}]"
            if not isinstance(item, dict):
                problems.append(f"{where}: expected a table {{id, addr}}, got {_type_name(item)}")
                continue
            entry = _check_table(item, _NODE_KEYS, f"{where}.", problems)
            missing = [k for k in _NODE_REQUIRED if k not in item]
            for k in missing:
                problems.append(f"{where}.{k}: missing")
            if all(k in entry for k in _NODE_REQUIRED):
                nodes.append(
                    BootstrapNode(id=entry["id"], addr=entry["addr"], api=entry.get("api"))
                )
        if raw_nodes is not None and not raw_nodes:
            problems.append(
                "raft.bootstrap.nodes: empty; list the initial members or omit [raft.bootstrap]"
            )
    kwargs["bootstrap"] = tuple(nodes)

    if "raft_addr" in raft and "raft_port" in raft:
        problems.append("raft.raft_port: give raft.raft_addr or raft.raft_port, not both")
    node_id = kwargs.get("node_id", attrs.fields(NodeConfig).node_id.default)
    own = next((n.addr for n in nodes if n.id == node_id), None)
    if "raft_addr" in raft:
        kwargs["raft_addr"] = raft["raft_addr"]
    elif "raft_port" in raft:
        port = raft["raft_port"]
        host = DEFAULT_RAFT_HOST
        if own is not None:
            with contextlib.suppress(ValueError):  # a bad address is reported later
                host = split_host_port(own)[0]
        kwargs["raft_addr"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not 1 <= port <= 65535:
            problems.append(f"raft.raft_port: {port} is outside 1-65535")
    elif own is not None:
        kwargs["raft_addr"] = own  # a bootstrapped node listens where the others will dial it
    own_api = next((n.api for n in nodes if n.id == node_id), None)
    if "api_addr" not in kwargs and own_api is not None:
        kwargs["api_addr"] = own_api  # likewise for the API the others will show and call
    return kwargs


def _check_path(key: str, path: str, problems: list[str]) -> bool:
    """False (and a problem) if ``path`` holds a NUL character, which no file name may."""
    if "\x00" in path:
        problems.append(f"{key}: a file name cannot hold a NUL character")
        return False
    return True


def _collect_security(top: dict[str, Any], kwargs: dict[str, Any], problems: list[str]) -> None:
    """The ``[tls]`` and ``[join]`` tables into ``tls``, ``insecure`` and ``join_token``."""
    tls = _check_table(top.get("tls", {}), _TLS_KEYS, "tls.", problems)
    kwargs["insecure"] = tls.get("insecure", False)
    paths = {k: tls[k] for k in ("ca_cert", "cert", "key") if k in tls}
    for name, value in paths.items():
        _check_path(f"tls.{name}", value, problems)
    if paths:
        missing = [k for k in ("ca_cert", "cert", "key") if k not in paths]
        for k in missing:
            problems.append(f"tls.{k}: missing (give tls.ca_cert, tls.cert and tls.key)")
        mode = tls.get("client_auth", "require")
        if mode not in CLIENT_AUTH_MODES:
            problems.append(
                f"tls.client_auth: {mode!r} must be one of "
                + ", ".join(repr(m) for m in CLIENT_AUTH_MODES)
            )
        if not missing and mode in CLIENT_AUTH_MODES:
            kwargs["tls"] = TlsFiles(
                ca_cert=pathlib.Path(paths["ca_cert"]),
                cert=pathlib.Path(paths["cert"]),
                key=pathlib.Path(paths["key"]),
                client_auth=mode,
            )
    elif "client_auth" in tls:
        problems.append("tls.client_auth: set without tls.ca_cert, tls.cert and tls.key")
    join = _check_table(top.get("join", {}), _JOIN_KEYS, "join.", problems)
    if "token" in join and "token_file" in join:
        problems.append("join.token_file: give join.token or join.token_file, not both")
    elif "token_file" in join:
        if _check_path("join.token_file", join["token_file"], problems):
            try:
                kwargs["join_token"] = pathlib.Path(join["token_file"]).read_text().strip()
            except OSError as exc:
                problems.append(f"join.token_file: cannot read it: {exc.strerror or exc}")
            except UnicodeDecodeError as exc:
                problems.append(f"join.token_file: not UTF-8 text (byte {exc.start})")
    elif "token" in join:
        kwargs["join_token"] = join["token"]
