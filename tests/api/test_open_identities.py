"""``Authority.identify`` with auth off keeps one identity per caller address (session 29):
the same identity as built per call before, never another address's, bounded; with auth on
nothing is kept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from univrs.api import auth
from univrs.api.auth import Authority, Caller, Identity
from univrs.errors import Unauthenticated
from univrs.sm.tokens import ROLES


def authority(enabled: bool) -> Authority:
    sm = SimpleNamespace(token_by_hash=lambda _: None, tokens_bootstrapped=True)
    node: Any = SimpleNamespace(
        config=SimpleNamespace(auth_enabled=enabled), runtime=SimpleNamespace(sm=sm)
    )
    return Authority(node)


def test_auth_off_identity_is_the_address_s_own() -> None:
    a = authority(False)
    for address in ("10.0.0.1", "10.0.0.2", None, "", "10.0.0.1"):
        for token in (None, "some-secret"):
            got = a.identify(Caller(token=token, address=address, via="10.9.9.9"))
            assert got == Identity(key=f"addr:{address or 'local'}", roles=frozenset(ROLES))
    assert a.identify(Caller(address="10.0.0.1")) is a.identify(Caller(address="10.0.0.1"))


def test_auth_off_identities_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_OPEN_IDENTITIES", 8)
    a = authority(False)
    for i in range(100):
        assert a.identify(Caller(address=f"h{i}")).key == f"addr:h{i}"
        assert len(a._open) <= 8


def test_auth_on_keeps_nothing() -> None:
    a = authority(True)
    with pytest.raises(Unauthenticated):
        a.identify(Caller(address="10.0.0.1"))
    with pytest.raises(Unauthenticated):
        a.identify(Caller(token="unknown", address="10.0.0.1"))
    assert not a._open
