"""A seeded fuzzer of config files (s16-fuzz): whatever a file holds, ``load_config`` either
returns a config or raises ``ConfigError`` naming the file; never another exception (which the
``univrs node start`` command shows as a traceback, not as a configuration error).

Documents are built from the loader's own key tables with values of every TOML type (integers
at the 64-bit edges, NaN and infinities, dates and times, control and wide characters, NUL,
arrays and inline tables), some with random bytes flipped (TOML that is not UTF-8).
``UNIVRS_FUZZ_ROUNDS=N`` sets how many documents the seeded test loads (default 400),
``UNIVRS_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import json
import os
import pathlib
import random

import pytest

from univrs.config import load_config
from univrs.config.load import (
    _API_KEYS,
    _AUTH_KEYS,
    _JOIN_KEYS,
    _LIMITS_KEYS,
    _RAFT_KEYS,
    _STATE_KEYS,
    _TLS_KEYS,
)
from univrs.errors import ConfigError

ROUNDS = int(os.environ.get("UNIVRS_FUZZ_ROUNDS", "400"))
SEED = int(os.environ.get("UNIVRS_FUZZ_SEED", "16"))
TABLES = {
    "raft": _RAFT_KEYS,
    "api": _API_KEYS,
    "auth": _AUTH_KEYS,
    "state": _STATE_KEYS,
    "limits": _LIMITS_KEYS,
    "tls": _TLS_KEYS,
    "join": _JOIN_KEYS,
}
STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "n1",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "[::1]:7001",
    "::1",
    "host:",
    ":7",
    "x" * 5000,
    "\u202e",
    "\u00e9",
    "/",
    "../..",
    "memory",
    "lmdb",
    "new",
    "existing",
    "require",
    "127.0.0.1:-1",
    "h:1:2",
    "[::1",
    "0.0.0.0:7001",
    "\t",
    "\U0001f600",
]


def toml_value(rng: random.Random, depth: int = 0) -> str:
    """The TOML text of a value of some type that has broken loaders before."""
    c = rng.randrange(11)
    if c == 0:
        return str(rng.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 65535, 65536, 10**18]))
    if c == 1:
        return rng.choice(["nan", "inf", "-inf", "0.0", "-0.0", "1e308", "1.5", "1e-300"])
    if c == 2:
        return rng.choice(["true", "false"])
    if c == 3:
        return rng.choice(["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27T07:32"])
    if c == 4:
        return json.dumps(rng.choice(STRINGS))  # JSON's escapes are TOML's (no surrogates here)
    if c == 5 and depth < 3:
        return "[" + ", ".join(toml_value(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    if c == 6 and depth < 3:
        keys = ["id", "addr", "api", "x", "n1"]
        pairs = {rng.choice(keys): toml_value(rng, depth + 1) for _ in range(rng.randrange(3))}
        return "{" + ", ".join(f"{json.dumps(k)} = {v}" for k, v in pairs.items()) + "}"
    if c == 7:
        return json.dumps(f"127.0.0.1:{rng.randrange(-5, 70000)}")
    if c == 8:
        return str(rng.randrange(-10, 100000))
    if c == 9:
        node = f"{{id = {toml_value(rng, 3)}, addr = {toml_value(rng, 3)}}}"
        return f'[{{id = "n1", addr = "127.0.0.1:7001"}}, {node}]'
    return json.dumps(f"n{rng.randrange(5)}")


def document(rng: random.Random) -> bytes:
    lines = []
    for table, keys in TABLES.items():
        if rng.random() < 0.5:
            continue
        lines.append(f"[{table}]")
        names = sorted(k for k in keys if k not in ("bootstrap", "dial"))
        for key in rng.sample(names, min(3, len(names))):
            lines.append(f"{key} = {toml_value(rng)}")
        if rng.random() < 0.1:
            lines.append(f"no_such_key = {toml_value(rng)}")
    if rng.random() < 0.3:
        lines += ["[raft.bootstrap]", f"nodes = {toml_value(rng)}"]
    if rng.random() < 0.2:
        lines += ["[raft.dial]", f"n1 = {toml_value(rng)}"]
    data = bytearray(("\n".join(lines) + "\n").encode())
    if rng.random() < 0.15:  # damage: random bytes, often not UTF-8
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_any_config_file_loads_or_is_refused_with_a_config_error(tmp_path: pathlib.Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "node.toml"
    loaded = refused = 0
    for _ in range(ROUNDS):
        data = document(rng)
        path.write_bytes(data)
        try:
            load_config(path)
            loaded += 1
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), exc
            refused += 1
        except Exception as exc:  # the point: anything else is a bug
            pytest.fail(f"{type(exc).__name__}: {exc} on {data!r}")
    assert refused > ROUNDS // 2 and loaded + refused == ROUNDS


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'[raft]\nnode_id = "n1"\n\xff\xfe = 1\n', "not UTF-8 text (byte 22"),
        (b'[raft]\nnode_id = "caf\xe9"\n', "not UTF-8 text"),
        (b"\x00\x01\x02binary", "TOML syntax error"),
        (b'[raft]\ndata_dir = "a\\u0000b"\n', "raft.data_dir: a file name cannot hold a NUL"),
        (b'[join]\ntoken_file = "a\\u0000b"\n', "join.token_file: a file name cannot hold"),
        (
            b'[tls]\ncert = "a\\u0000b"\nkey = "k"\nca_cert = "c"\n',
            "tls.cert: a file name cannot hold a NUL",
        ),
    ],
    ids=["binary", "latin-1", "nul-bytes", "nul-data-dir", "nul-token-file", "nul-tls-path"],
)
def test_files_that_broke_the_loader_get_a_config_error(
    tmp_path: pathlib.Path, data: bytes, expected: str
) -> None:
    """Each was a UnicodeDecodeError or a ValueError ("embedded null byte") before s16-fuzz:
    a traceback at ``univrs node start``, or a crash after the node began to start."""
    path = tmp_path / "node.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value), info.value


def test_a_token_file_that_is_not_text_is_a_config_error(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe\x00garbage")
    path = tmp_path / "node.toml"
    path.write_text(f"[join]\ntoken_file = {json.dumps(str(token))}\n")
    with pytest.raises(ConfigError, match=r"join\.token_file: not UTF-8 text"):
        load_config(path)
