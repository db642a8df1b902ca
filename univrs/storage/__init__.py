"""Durable storage of a node's Raft state (log, hard state, snapshot) in LMDB.

See docs/storage.md for the on-disk layout and the guarantees.
"""

from univrs.storage.defragment import DefragResult, defrag
from univrs.storage.env import StorageStatistics
from univrs.storage.log_store import LogCompacted, LogStore

__all__ = ["DefragResult", "LogCompacted", "LogStore", "StorageStatistics", "defrag"]
