"""Loopback ports for the local clusters that tests, benches and chaos runs start
(``free_ports``): picked outside the kernel's ephemeral range, so an outgoing connection's
source port cannot take one between the pick and the node's bind."""

from __future__ import annotations

import pathlib
import random
import socket

__all__ = ["EPHEMERAL_FILE", "LISTEN_PORTS", "ephemeral_range", "free_ports"]

EPHEMERAL_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LISTEN_PORTS = (20000, 32767)  # where free_ports looks first: below Linux's default ephemeral range


def ephemeral_range(path: str = EPHEMERAL_FILE) -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections (Linux's default where the
    file cannot be read)."""
    try:
        low, high = (int(x) for x in pathlib.Path(path).read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_ports(count: int, *, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (bound together, then
    released, so they are distinct).

    Picked at random outside the kernel's ephemeral range, not by binding port 0 (which takes
    one from that range): a node started seconds later on a port of that range could find it
    held as the source port of some outgoing connection (found by chaos: a spare's raft port
    was taken in the 3 s before it started). Port 0 only if no free port turns up there."""
    rng = rng or random.Random()
    low, high = LISTEN_PORTS
    eph_low, eph_high = ephemeral_range()
    socks: list[socket.socket] = []
    try:
        for _ in range(40 * count):
            if len(socks) == count:
                break
            port = rng.randint(low, high)
            if eph_low <= port <= eph_high:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
