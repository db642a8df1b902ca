"""Node configuration: a TOML file plus flags (``load.py``) into a validated, frozen
``NodeConfig`` (``model.py``). ``docs/config.md`` documents every key.

The names below are the unit's interface; import them from ``univrs.config``.
"""

from __future__ import annotations

from univrs.config.load import load_config, parse_bootstrap
from univrs.config.model import (
    DEFAULT_RAFT_HOST,
    ENVELOPE_HEADROOM,
    INITIAL_CLUSTER_STATES,
    MAX_PAYLOAD_SIZE,
    MIN_PAYLOAD_SIZE,
    BootstrapNode,
    NodeConfig,
    choose_tick_ms,
    is_loopback,
)

__all__ = [
    "DEFAULT_RAFT_HOST",
    "ENVELOPE_HEADROOM",
    "INITIAL_CLUSTER_STATES",
    "MAX_PAYLOAD_SIZE",
    "MIN_PAYLOAD_SIZE",
    "BootstrapNode",
    "NodeConfig",
    "choose_tick_ms",
    "is_loopback",
    "load_config",
    "parse_bootstrap",
]
