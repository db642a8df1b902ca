"""Parsing of "host:port" addresses (raft and api addresses in the config and the membership).

IPv6 literals are written in brackets (``[::1]:7000``), as in URLs. A host is never empty and a
port is an integer in 1..65535; port 0 ("pick any free port") is accepted only where the caller
says so (tests bind port 0 and read the real port back).
"""

from __future__ import annotations

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def split_host_port(addr: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``"host:port"`` into its parts; raises ValueError saying what is wrong."""
    if not isinstance(addr, str):
        raise ValueError(f"expected a 'host:port' string, got {type(addr).__name__}")
    if addr.startswith("["):
        end = addr.find("]")
        if end == -1 or addr[end + 1 : end + 2] != ":":
            raise ValueError(f"{addr!r} is not 'host:port' (IPv6 hosts look like '[::1]:7000')")
        host, port_text = addr[1:end], addr[end + 2 :]
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            raise ValueError(f"{addr!r} is not 'host:port' (no port)")
        if ":" in host:
            raise ValueError(f"{addr!r}: write IPv6 hosts in brackets, like '[::1]:7000'")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{addr!r} has an empty or malformed host")
    if not port_text.isdigit():
        raise ValueError(f"{addr!r} has a non-numeric port {port_text!r}")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"{addr!r} has port {port}, outside {low}-65535")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """Inverse of split_host_port (brackets IPv6 literals)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
