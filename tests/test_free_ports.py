"""``port_picker.free_ports``: distinct, bindable loopback ports outside the kernel's ephemeral
range (a port from that range, picked by binding port 0, could be taken as an outgoing
connection's source port before the node that was given it started: found by chaos)."""

from __future__ import annotations

import random
import socket

from univrs.tools import ports as port_picker


def test_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = port_picker.ephemeral_range()
    ports = port_picker.free_ports(20, rng=random.Random(1))
    assert len(set(ports)) == 20
    assert not [p for p in ports if low <= p <= high], (ports, (low, high))
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_skipped() -> None:
    first = port_picker.free_ports(1, rng=random.Random(7))[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", first))
        again = port_picker.free_ports(1, rng=random.Random(7))[0]  # the same draw first
    assert again != first


def test_the_ephemeral_range_falls_back_to_linux_defaults() -> None:
    assert port_picker.ephemeral_range("/nonexistent/range") == (32768, 60999)
