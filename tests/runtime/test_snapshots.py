"""The runtime's snapshot capture/encode and restore (univrs/runtime/snapshots.py)."""

from __future__ import annotations

import pytest

from tests.sm.helpers import spec
from tests.sm.test_sm_snapshot import populated
from univrs import codec
from univrs.errors import StorageError
from univrs.runtime.snapshots import capture, restore
from univrs.sm import BootstrapToken, CreateWorkload, snapshot_plain, state_digest


def test_capture_encodes_the_state_at_capture_time_and_restore_reads_it() -> None:
    log = populated()
    log(BootstrapToken(id="t0", name="root", secret_hash="cd" * 32))  # tokens are captured too
    expected = snapshot_plain(log.sm)
    digest = state_digest(log.sm)
    encode = capture(log.sm)
    log(CreateWorkload(id="later", spec=spec("later")))  # applied after the capture
    data = encode()
    assert codec.decode_plain(data, max_size=1 << 30, max_depth=64) == expected
    restored = restore(data)
    assert state_digest(restored) == digest
    assert restored.problems() == []
    assert [t.id for t in restored.stored_tokens()] == ["t0"]
    assert restored.tokens_bootstrapped


def test_restore_refuses_a_corrupt_snapshot_as_a_storage_error() -> None:
    data = bytearray(capture(populated().sm)())
    with pytest.raises(StorageError):
        restore(bytes(data[:-3]))
