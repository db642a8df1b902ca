"""Plain data: None, bool, int, float, str, bytes, arrays and maps keyed by str / int / bytes.

``encode_plain`` refuses (``TypeError``) what is not plain, so we never produce a frame our
own decoder would refuse; ``decode_plain`` decodes one item strictly (``strict.load``) and
refuses (``ProtocolError``) what is not plain. Both checks run on the hot path (every
proposal, request frame and entry payload), hence their exact-type fast paths; property tests
(tests/test_codec_plain.py) hold them to a reference of the general rule.
"""

from __future__ import annotations

from typing import Any

import cbor2

from univrs.codec.strict import load
from univrs.errors import ProtocolError

__all__ = ["DEFAULT_MAX_DEPTH", "check_plain", "decode_plain", "encode_plain"]

DEFAULT_MAX_DEPTH = 32
"""Default bound on container nesting for plain data."""

_UINT_MAX = (1 << 64) - 1


def encode_plain(obj: Any) -> bytes:
    """Encode plain data (see :func:`decode_plain` for what is plain). Tuples become arrays.

    Raises ``TypeError`` for anything else (sets, datetimes, custom classes, ...), so we never
    produce a frame our own decoder would refuse.
    """
    _check_plain_out(obj, DEFAULT_MAX_DEPTH)
    return cbor2.dumps(obj)


def decode_plain(
    data: bytes,
    *,
    max_size: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int | None = None,
    max_cost: int | None = None,
) -> Any:
    """Decode one plain CBOR item strictly; raises ProtocolError if it is invalid.

    ``max_items`` (None: no bound) bounds the CBOR items in ``data``, counted before any is built
    (``strict.check_item_count``: small frames of a few fields), ``max_cost`` the memory its
    objects are estimated to take (``strict.check_frame_cost``): give one for frames from the
    network. Plain values are ``None``,
    ``bool``, ``int`` (64-bit CBOR range), ``float``, ``str``, ``bytes``, ``list`` and ``dict``
    whose keys are ``str``, ``int`` or ``bytes``; containers nest at most ``max_depth`` deep. No
    tags, simple values or ``undefined``.
    """
    obj = load(
        data,
        max_size=max_size,
        max_depth=max_depth,
        what="plain frame",
        max_items=max_items,
        max_cost=max_cost,
    )
    _check_plain_in(obj, max_depth)
    return obj


def check_plain(obj: Any, *, max_depth: int) -> None:
    """Refuse (``ProtocolError``) an item decoded strictly (``strict.strict_decoder``) that
    is not plain data: ``decode_plain``'s check after its decoding, for a reader that decodes
    a large frame item by item."""
    _check_plain_in(obj, max_depth)


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_PLAIN_KEYS = (int, str, bytes)


_PLAIN_SCALAR_SET = frozenset(_PLAIN_SCALARS)
_PLAIN_KEY_SET = frozenset(_PLAIN_KEYS)
_is_int = int.__instancecheck__


def _check_plain_in(obj: Any, depth: int) -> None:
    """Refuse (ProtocolError) a decoded item that is not plain data. Runs on every frame and
    entry payload decoded: scalar members of a container are checked in place (one call per
    container, not per value)."""
    t = type(obj)
    if t in _PLAIN_SCALAR_SET:
        return
    if depth <= 0:
        raise ProtocolError("plain frame nests too deep")
    if t is list:
        # A list of scalars (a snapshot row: most of a large frame) is checked in one C pass.
        if _PLAIN_SCALAR_SET.issuperset(map(type, obj)):
            return
        for item in obj:
            if type(item) not in _PLAIN_SCALAR_SET:
                _check_plain_in(item, depth - 1)
    elif t is dict:
        for key, value in obj.items():
            if type(key) not in _PLAIN_KEY_SET:
                raise ProtocolError(f"plain frame has a map key of type {type(key).__name__}")
            if type(value) not in _PLAIN_SCALAR_SET:
                _check_plain_in(value, depth - 1)
    else:
        raise ProtocolError(f"plain frame contains a {t.__name__}, which is not plain data")


_EXACT_SCALARS_OUT = frozenset({type(None), bool, float, str, bytes})


def _check_plain_out(obj: Any, depth: int) -> None:
    """Refuse (TypeError) what is not plain data. The exact built-in types take a fast path
    (this runs on every proposal the leader encodes); subclasses (enums, ...) and everything
    else take the general one, ``_check_plain_out_general``, which decides alike."""
    t = type(obj)
    if t in _EXACT_SCALARS_OUT:
        return
    if t is int:
        if not -(1 << 64) <= obj <= _UINT_MAX:
            raise TypeError(f"integer {obj} is outside the CBOR 64-bit range")
        return
    if depth <= 0:
        _check_plain_out_general(obj, depth)
        return
    if t is dict:
        for key, value in obj.items():
            kt, vt = type(key), type(value)
            if kt is str:
                if vt in _EXACT_SCALARS_OUT:
                    continue
                if vt is int:  # in place, not a call per int (a request's ids, seq, counts)
                    if not -(1 << 64) <= value <= _UINT_MAX:
                        raise TypeError(f"integer {value} is outside the CBOR 64-bit range")
                    continue
            else:
                if isinstance(key, bool) or not isinstance(key, _PLAIN_KEYS):
                    raise TypeError(f"map key {key!r} is not a str, int or bytes")
                _check_plain_out(key, depth - 1)
            _check_plain_out(value, depth - 1)
    elif t is list or t is tuple:
        # A row of exact scalars (a snapshot row: most of a large frame) takes one C pass over
        # its item types and one min/max over its ints, not a call per int.
        kinds = set(map(type, obj))
        if _EXACT_SCALARS_OUT.issuperset(kinds):
            return
        if int in kinds and _EXACT_SCALARS_OUT.issuperset(kinds - {int}):
            ints = list(filter(_is_int, obj))  # bools too: they are in range anyway
            if min(ints) >= -(1 << 64) and max(ints) <= _UINT_MAX:
                return
        for item in obj:
            if type(item) not in _EXACT_SCALARS_OUT:
                _check_plain_out(item, depth - 1)
    else:
        _check_plain_out_general(obj, depth)


def _check_plain_out_general(obj: Any, depth: int) -> None:
    if obj is None or isinstance(obj, bool | float | str | bytes):
        return
    if isinstance(obj, int):
        if not -(1 << 64) <= obj <= _UINT_MAX:
            raise TypeError(f"integer {obj} is outside the CBOR 64-bit range")
        return
    if depth <= 0:
        raise TypeError(f"plain data nests deeper than {DEFAULT_MAX_DEPTH}")
    if isinstance(obj, list | tuple):
        for item in obj:
            _check_plain_out(item, depth - 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, _PLAIN_KEYS):
                raise TypeError(f"map key {key!r} is not a str, int or bytes")
            _check_plain_out(key, depth - 1)
            _check_plain_out(value, depth - 1)
    else:
        raise TypeError(f"{type(obj).__name__} is not plain data")
