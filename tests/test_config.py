"""Node configuration: TOML loading, overrides, validation messages, ms -> ticks."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from univrs.config import (
    BootstrapNode,
    NodeConfig,
    choose_tick_ms,
    load_config,
    parse_bootstrap,
)
from univrs.errors import ConfigError
from univrs.raft.ready import RaftConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent

THREE = """
[raft.bootstrap]
nodes = [
    { id = "n1", addr = "127.0.0.1:7001" },
    { id = "n2", addr = "127.0.0.1:7002" },
    { id = "n3", addr = "127.0.0.1:7003" },
]
"""


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "node.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_the_embedded_single_node() -> None:
    c = load_config(None)
    assert c == NodeConfig()
    assert c.node_id == "node-1"
    assert c.data_dir == pathlib.Path("./univrs-data")
    assert c.raft_addr == "127.0.0.1:7000" and c.api_addr == "127.0.0.1:8000"
    assert (c.heartbeat_interval_ms, c.election_timeout_min_ms, c.election_timeout_max_ms) == (
        150,
        300,
        500,
    )
    assert c.snapshot_threshold == 10000 and c.snapshot_max_chunk_size == 1048576
    assert c.max_payload_size == 4194304 and c.bootstrap == ()


def test_full_file(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        """
        [raft]
        node_id = "n2"
        cluster_id = "prod"
        data_dir = "/var/lib/univrs"
        raft_addr = "0.0.0.0:7002"
        heartbeat_interval_ms = 100
        election_timeout_min_ms = 1000
        election_timeout_max_ms = 2000
        snapshot_threshold = 500
        snapshot_max_chunk_size = 65536
        max_payload_size = 1048576
        """
        + THREE
        + """
        [api]
        addr = "0.0.0.0:9000"
        [tls]
        insecure = true
        """,
    )
    c = load_config(path)
    assert c.node_id == "n2" and c.cluster_id == "prod"
    assert c.data_dir == pathlib.Path("/var/lib/univrs")
    assert c.raft_addr == "0.0.0.0:7002" and c.api_addr == "0.0.0.0:9000"
    assert c.bootstrap[1] == BootstrapNode(id="n2", addr="127.0.0.1:7002")
    assert c.bootstrap_addresses() == {
        "n1": "127.0.0.1:7001",
        "n2": "127.0.0.1:7002",
        "n3": "127.0.0.1:7003",
    }
    assert (c.snapshot_threshold, c.snapshot_max_chunk_size, c.max_payload_size) == (
        500,
        65536,
        1048576,
    )


def test_bootstrapped_node_listens_on_its_bootstrap_address(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, '[raft]\nnode_id = "n3"\n' + THREE)
    assert load_config(path).raft_addr == "127.0.0.1:7003"


def test_bootstrap_api_addresses(tmp_path: pathlib.Path) -> None:
    nodes = '[{id="n1", addr="127.0.0.1:7001", api="127.0.0.1:8001"}, {id="n2", addr="h:2"}]'
    path = write(tmp_path, f'[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = {nodes}\n')
    c = load_config(path)
    assert c.api_addr == "127.0.0.1:8001"  # taken from this node's entry
    assert c.bootstrap[0].api == "127.0.0.1:8001" and c.bootstrap[1].api is None
    wildcard = load_config(path, {"api_addr": "0.0.0.0:8001", "insecure": True})
    assert wildcard.api_addr == "0.0.0.0:8001"


def test_raft_port_takes_the_host_of_the_bootstrap_entry(tmp_path: pathlib.Path) -> None:
    assert load_config(write(tmp_path, "[raft]\nraft_port = 7100\n")).raft_addr == "127.0.0.1:7100"
    path = write(tmp_path, '[raft]\nnode_id = "n1"\nraft_port = 7001\n' + THREE)
    assert load_config(path).raft_addr == "127.0.0.1:7001"


@pytest.mark.parametrize(
    "name", ["node.toml", "cluster/node-1.toml", "cluster/node-2.toml", "cluster/node-3.toml"]
)
def test_shipped_examples_are_valid(name: str) -> None:
    c = load_config(ROOT / "examples" / name)
    assert c.node_id in {"node-1", "node-2", "node-3"}


def test_shipped_single_node_example_shows_the_defaults() -> None:
    assert load_config(ROOT / "examples" / "node.toml") == NodeConfig()


def test_shipped_cluster_is_consistent() -> None:
    configs = [load_config(ROOT / "examples" / "cluster" / f"node-{i}.toml") for i in (1, 2, 3)]
    assert len({c.bootstrap for c in configs}) == 1
    assert len({c.raft_addr for c in configs}) == 3
    assert len({c.api_addr for c in configs}) == 3
    assert len({c.data_dir for c in configs}) == 3
    assert {c.raft_addr for c in configs} == set(configs[0].bootstrap_addresses().values())


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    for field in (
        "node_id",
        "cluster_id",
        "data_dir",
        "raft_addr",
        "raft_port",
        "heartbeat_interval_ms",
        "election_timeout_min_ms",
        "election_timeout_max_ms",
        "read_lease",
        "lease_drift_ms",
        "snapshot_threshold",
        "snapshot_max_chunk_size",
        "max_payload_size",
        "initial_cluster_state",
        "[raft.bootstrap]",
        "[api]",
    ):
        assert f"`{field}`" in doc, field


# --------------------------------------------------------------- bad files: table of messages

BAD: list[tuple[str, str, list[str]]] = [
    ("syntax error", "[raft]\nnode_id = \n", ["TOML syntax error", "line 2"]),
    ("unclosed table", "[raft\n", ["TOML syntax error", "line 1"]),
    (
        "unknown key with suggestion",
        "[raft]\nheartbeat_interval = 100\n",
        ["raft.heartbeat_interval: unknown key", "did you mean 'raft.heartbeat_interval_ms'?"],
    ),
    ("unknown table", "[rafts]\n", ["rafts: unknown key", "did you mean 'raft'?"]),
    ("unknown key without match", "[api]\nzzz = 1\n", ["api.zzz: unknown key"]),
    (
        "string for int",
        '[raft]\nheartbeat_interval_ms = "150"\n',
        ["raft.heartbeat_interval_ms: expected an integer, got string '150'"],
    ),
    (
        "bool for int",
        "[raft]\nsnapshot_threshold = true\n",
        ["raft.snapshot_threshold: expected an integer, got boolean True"],
    ),
    ("float for int", "[raft]\nmax_payload_size = 4.5\n", ["expected an integer, got float"]),
    ("int for string", "[raft]\nnode_id = 3\n", ["raft.node_id: expected a string, got integer"]),
    ("raft not a table", 'raft = "x"\n', ["raft: expected a table, got string"]),
    (
        "election min not above heartbeat",
        "[raft]\nheartbeat_interval_ms = 300\nelection_timeout_min_ms = 300\n",
        ["raft.election_timeout_min_ms: 300 must be above raft.heartbeat_interval_ms (300)"],
    ),
    (
        "max below min",
        "[raft]\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 350\n",
        ["raft.election_timeout_max_ms: 350 is below raft.election_timeout_min_ms (400)"],
    ),
    (
        "negative heartbeat",
        "[raft]\nheartbeat_interval_ms = -5\n",
        ["raft.heartbeat_interval_ms: must be a positive integer, got -5"],
    ),
    ("zero threshold", "[raft]\nsnapshot_threshold = 0\n", ["raft.snapshot_threshold: must be"]),
    (
        "lease drift leaves no lease",
        "[raft]\nread_lease = true\nlease_drift_ms = 250\n",
        ["raft.lease_drift_ms: 250 leaves read_lease no lease", "below 200"],
    ),
    ("negative lease drift", "[raft]\nlease_drift_ms = -1\n", ["raft.lease_drift_ms: -1"]),
    ("read_lease not a boolean", "[raft]\nread_lease = 1\n", ["raft.read_lease: expected"]),
    (
        "tiny payload",
        "[raft]\nmax_payload_size = 1000\n",
        ["raft.max_payload_size: 1000 is outside"],
    ),
    (
        "chunk does not fit the payload",
        "[raft]\nmax_payload_size = 1048576\nsnapshot_max_chunk_size = 1048576\n",
        ["raft.snapshot_max_chunk_size: 1048576 does not fit"],
    ),
    ("addr without port", '[raft]\nraft_addr = "localhost"\n', ["raft.raft_addr:", "no port"]),
    ("port out of range", '[api]\naddr = "127.0.0.1:70000"\n', ["api.addr:", "outside 0-65535"]),
    ("non-numeric port", '[api]\naddr = "h:http"\n', ["api.addr:", "non-numeric port"]),
    ("bad raft_port", "[raft]\nraft_port = 0\n", ["raft.raft_port: 0 is outside 1-65535"]),
    (
        "both raft_addr and raft_port",
        '[raft]\nraft_addr = "127.0.0.1:7000"\nraft_port = 7000\n',
        ["give raft.raft_addr or raft.raft_port, not both"],
    ),
    (
        "api and raft on one port",
        '[raft]\nraft_addr = "0.0.0.0:7000"\n[api]\naddr = "127.0.0.1:7000"\n',
        ["api.addr: '127.0.0.1:7000' uses the same port as raft.raft_addr"],
    ),
    ("empty data_dir", '[raft]\ndata_dir = ""\n', ["raft.data_dir: must not be empty"]),
    ("bad node id", '[raft]\nnode_id = "a b"\n', ["raft.node_id: 'a b' must be 1-64 letters"]),
    (
        "duplicate bootstrap id",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:1"}, '
        '{id="n2", addr="h:2"}, {id="n1", addr="h:3"}]\n',
        ["raft.bootstrap.nodes[2].id: duplicate id 'n1' (also nodes[0])"],
    ),
    (
        "duplicate bootstrap addr",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:1"}, '
        '{id="n2", addr="h:1"}]\n',
        ["raft.bootstrap.nodes[1].addr: duplicate address 'h:1' (also nodes[0].addr)"],
    ),
    (
        "node not in bootstrap",
        '[raft]\nnode_id = "n9"\n' + THREE,
        ["raft.node_id: 'n9' is not among raft.bootstrap.nodes ('n1', 'n2', 'n3')"],
    ),
    (
        "raft_addr differs from bootstrap entry",
        '[raft]\nnode_id = "n1"\nraft_addr = "127.0.0.1:7005"\n' + THREE,
        ["raft.raft_addr: '127.0.0.1:7005' differs from this node's bootstrap address"],
    ),
    (
        "bad bootstrap addr",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:0"}]\n',
        ["raft.bootstrap.nodes[0].addr:", "outside 1-65535"],
    ),
    (
        "bootstrap entry missing addr",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1"}]\n',
        ["raft.bootstrap.nodes[0].addr: missing"],
    ),
    (
        "bootstrap entry unknown key",
        '[raft.bootstrap]\nnodes = [{id="node-1", addr="h:1", adr="x"}]\n',
        ["raft.bootstrap.nodes[0].adr: unknown key", "did you mean 'raft.bootstrap.nodes[0].addr'"],
    ),
    (
        "bad bootstrap api",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:1", api="h"}]\n',
        ["raft.bootstrap.nodes[0].api:", "no port"],
    ),
    (
        "bootstrap api reuses an address",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:1"}, '
        '{id="n2", addr="h:2", api="h:1"}]\n',
        ["raft.bootstrap.nodes[1].api: duplicate address 'h:1' (also nodes[0].addr)"],
    ),
    (
        "api.addr differs from bootstrap api",
        '[raft]\nnode_id = "n1"\n[raft.bootstrap]\nnodes = [{id="n1", addr="h:1", api="h:8"}]\n'
        '[api]\naddr = "h:9"\n',
        ["api.addr: 'h:9' differs from this node's bootstrap api address 'h:8'"],
    ),
    ("bootstrap entry not a table", "[raft.bootstrap]\nnodes = [1]\n", ["expected a table {id"]),
    ("bootstrap without nodes", "[raft.bootstrap]\n", ["raft.bootstrap.nodes: missing"]),
    ("bootstrap nodes empty", "[raft.bootstrap]\nnodes = []\n", ["raft.bootstrap.nodes: empty"]),
    (
        "batch gather out of range",
        "[raft]\nbatch_gather_ms = -1\n",
        ["raft.batch_gather_ms: -1 must be 0-1000 (0: off)"],
    ),
    (
        "inline write bytes negative",
        "[raft]\ninline_write_bytes = -1\n",
        ["raft.inline_write_bytes: -1 must be 0-1048576 (0: every write on the storage thread)"],
    ),
    (
        "inline write bytes too large",
        "[raft]\ninline_write_bytes = 2097152\n",
        ["raft.inline_write_bytes: 2097152 must be 0-1048576"],
    ),
    (
        "initial cluster state unknown",
        '[raft]\ninitial_cluster_state = "old"\n',
        ["raft.initial_cluster_state: 'old' must be one of 'new', 'existing'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in BAD], ids=[n for n, _, _ in BAD]
)
def test_bad_config_is_refused_with_a_clear_message(
    tmp_path: pathlib.Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in expected:
        assert fragment in message, message


def test_all_problems_are_reported_at_once(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, '[raft]\nnode_idd = "x"\nmax_payload_size = "big"\n[apii]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any("raft.node_idd" in ln for ln in lines)
    assert any("raft.max_payload_size" in ln for ln in lines)
    assert any("apii" in ln for ln in lines)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")


# -------------------------------------------------------------------------------- overrides


def test_flags_override_the_file(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, '[raft]\nnode_id = "n1"\nraft_port = 7001\n[api]\naddr = "h:1"\n')
    c = load_config(
        path,
        {
            "node_id": "n7",
            "raft.raft_addr": "127.0.0.1:7777",  # replaces the file's raft_port
            "api_addr": "127.0.0.1:8888",
            "data_dir": pathlib.Path("/tmp/x"),
            "heartbeat_interval_ms": None,  # an unset flag changes nothing
        },
    )
    assert c.node_id == "n7" and c.raft_addr == "127.0.0.1:7777"
    assert c.api_addr == "127.0.0.1:8888" and c.data_dir == pathlib.Path("/tmp/x")
    assert c.heartbeat_interval_ms == 150


def test_flags_without_file_and_bootstrap_string() -> None:
    c = load_config(
        None, {"node_id": "b", "bootstrap": "a=127.0.0.1:7001, b=127.0.0.1:7002", "api_addr": None}
    )
    assert c.raft_addr == "127.0.0.1:7002"
    assert c.bootstrap_addresses() == {"a": "127.0.0.1:7001", "b": "127.0.0.1:7002"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"node-id": "x"}, "unknown option 'node-id' (did you mean 'node_id'?)"),
        ({"heartbeat_interval_ms": "fast"}, "command line: raft.heartbeat_interval_ms: expected"),
        ({"bootstrap": "a=h:1,b"}, "item 2 'b' is not 'id=host:port'"),
        ({"raft_port": 7000, "api_addr": "127.0.0.1:7000"}, "uses the same port"),
    ],
)
def test_bad_flags(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert expected in str(info.value)


def test_initial_cluster_state_defaults_to_new_and_the_flag_overrides_the_file(
    tmp_path: pathlib.Path,
) -> None:
    assert load_config(None).initial_cluster_state == "new"  # the embedded default bootstraps
    path = write(tmp_path, '[raft]\ninitial_cluster_state = "existing"\n')
    assert load_config(path).initial_cluster_state == "existing"
    flag = load_config(path, {"initial_cluster_state": "new"})
    assert flag.initial_cluster_state == "new"


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("n1=h:1") == [{"id": "n1", "addr": "h:1"}]
    with pytest.raises(ConfigError):
        parse_bootstrap("=h:1")


def test_port_zero_is_allowed_for_listening_only() -> None:
    c = NodeConfig(raft_addr="127.0.0.1:0", api_addr="127.0.0.1:0")
    assert c.raft_addr.endswith(":0")
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.addr"):
        NodeConfig(node_id="a", bootstrap=(BootstrapNode(id="a", addr="127.0.0.1:0"),))


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"raft\.election_timeout_max_ms"):
        NodeConfig(election_timeout_max_ms=200)


# ---------------------------------------------------------------------------- ticks


@pytest.mark.parametrize(
    ("timings", "tick"),
    [
        ((150, 300, 500), 50),
        ((100, 1000, 2000), 50),
        ((20, 200, 400), 20),
        ((30, 90, 150), 30),
        ((60, 600, 1200), 30),
        ((151, 300, 500), 50),  # gcd 1: a third of the heartbeat, clamped to 50
        ((12, 36, 48), 12),
        ((5, 20, 30), 1),  # gcd 5 < 10; heartbeat // 3 = 1
    ],
)
def test_choose_tick_ms(timings: tuple[int, int, int], tick: int) -> None:
    assert choose_tick_ms(*timings) == tick


def test_default_raft_config_in_ticks() -> None:
    c = NodeConfig()
    assert c.tick_ms == 50
    rc = c.raft_config()
    assert isinstance(rc, RaftConfig)
    assert (rc.heartbeat_ticks, rc.election_ticks_min, rc.election_ticks_max) == (3, 6, 10)
    assert rc.max_bytes_per_msg <= c.max_payload_size // 2
    # Nodes run the lazy commit notices (univrs/raft/commit_notice.py; the core's default is eager).
    assert rc.lazy_commit_notice_bytes == 1024 and RaftConfig().lazy_commit_notice_bytes == 0


@pytest.mark.parametrize(
    "timings",
    [(150, 300, 500), (151, 152, 153), (5, 6, 7), (1, 2, 2), (100, 101, 5000), (999, 1000, 1000)],
)
def test_raft_config_keeps_the_core_invariant(timings: tuple[int, int, int]) -> None:
    h, lo, hi = timings
    c = NodeConfig(heartbeat_interval_ms=h, election_timeout_min_ms=lo, election_timeout_max_ms=hi)
    rc = c.raft_config()  # RaftConfig itself checks 0 < heartbeat < min <= max
    # Each timing is within one tick of its millisecond value (or lifted to keep the order).
    assert abs(rc.heartbeat_ticks * c.tick_ms - h) <= c.tick_ms
    assert rc.election_ticks_min * c.tick_ms >= lo - c.tick_ms


def test_explicit_tick_length() -> None:
    rc = NodeConfig().raft_config(tick_ms=10)
    assert (rc.heartbeat_ticks, rc.election_ticks_min, rc.election_ticks_max) == (15, 30, 50)
    with pytest.raises(ValueError):
        NodeConfig().raft_config(tick_ms=0)


def test_small_payload_limits_the_core_batches() -> None:
    c = NodeConfig(max_payload_size=256 * 1024, snapshot_max_chunk_size=128 * 1024)
    assert c.raft_config().max_bytes_per_msg == 128 * 1024


@pytest.mark.parametrize("module", ["univrs.config", "univrs.net"])
def test_imports_cleanly_on_its_own(module: str) -> None:
    # config and net refer to each other; either must import first in a fresh interpreter.
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_dial_overrides_replace_advertised_addresses(tmp_path: pathlib.Path) -> None:
    from univrs.config import load_config

    cfg = tmp_path / "n.toml"
    cfg.write_text('[raft]\nnode_id = "n1"\n[raft.dial]\nn2 = "127.0.0.1:9002"\n')
    config = load_config(cfg, {})
    advertised = {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002", "n3": "127.0.0.1:7003"}
    assert config.dial_addresses(advertised) == {**advertised, "n2": "127.0.0.1:9002"}


def test_dial_override_with_a_bad_address_is_refused(tmp_path: pathlib.Path) -> None:
    import pytest

    from univrs.config import load_config
    from univrs.errors import ConfigError

    cfg = tmp_path / "n.toml"
    cfg.write_text('[raft]\nnode_id = "n1"\n[raft.dial]\nn2 = "nowhere"\n')
    with pytest.raises(ConfigError, match=r"raft\.dial\.n2"):
        load_config(cfg, {})


# ---------------------------------------------------------------- [tls], [join], insecure


def test_tls_and_join_tables(tmp_path: pathlib.Path) -> None:
    (tmp_path / "token").write_text("0123456789abcdef0123\n")
    path = write(
        tmp_path,
        f"""
        [raft]
        raft_addr = "10.0.0.1:7000"
        [api]
        addr = "10.0.0.1:8000"
        [tls]
        ca_cert = "certs/ca.crt"
        cert = "certs/node.n1.crt"
        key = "certs/node.n1.key"
        client_auth = "optional"
        [join]
        token_file = "{tmp_path / "token"}"
        """,
    )
    c = load_config(path)
    assert c.tls is not None and c.tls.client_auth == "optional"
    assert c.tls.cert == pathlib.Path("certs/node.n1.crt")
    assert c.join_token == "0123456789abcdef0123" and not c.insecure
    flags = load_config(path, {"client_auth": "require", "join_token": "x" * 16})
    assert flags.tls is not None and flags.tls.client_auth == "require"
    assert flags.join_token == "x" * 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tls]\nca_cert = "ca.crt"\n', "tls.cert: missing"),
        ('[tls]\nca_cert = "a"\ncert = "b"\nkey = "c"\nclient_auth = "maybe"\n', "client_auth"),
        ('[tls]\ninsecure = "yes"\n', "tls.insecure: expected a boolean"),
        ('[join]\ntoken = "short"\n', "at least 16"),
        ('[join]\ntoken = "0123456789abcdef"\ntoken_file = "t"\n', "not both"),
    ],
)
def test_bad_tls_and_join_keys(tmp_path: pathlib.Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "overrides",
    [
        {"raft_addr": "0.0.0.0:7000"},
        {"api_addr": "10.1.2.3:8000"},
        {"raft_addr": "[::]:7000"},
        {"api_addr": "node1.example:8000"},
    ],
)
def test_plaintext_beyond_loopback_needs_insecure(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="no TLS is configured"):
        load_config(None, overrides)
    assert load_config(None, {**overrides, "insecure": True}).insecure


def test_plaintext_on_loopback_is_the_embedded_default() -> None:
    for addr in ("127.0.0.1:7000", "[::1]:7000", "localhost:7000", "127.0.0.2:7000"):
        assert load_config(None, {"raft_addr": addr}).tls is None


def test_state_backend_defaults_to_lmdb_and_takes_memory_from_the_file_or_a_flag(
    tmp_path: pathlib.Path,
) -> None:
    assert load_config(None).state_backend == "lmdb"
    path = write(tmp_path, '[state]\nbackend = "memory"\n')
    assert load_config(path).state_backend == "memory"
    assert load_config(path, {"state_backend": "lmdb"}).state_backend == "lmdb"
    with pytest.raises(ConfigError, match=r"state\.backend: 'disk' must be one of"):
        load_config(None, {"state.backend": "disk"})
    with pytest.raises(ConfigError, match=r"state\.sync"):
        load_config(write(tmp_path, "[state]\nsync = true\n"))


def test_read_lease_reaches_the_core_with_the_drift_bound_in_ticks() -> None:
    assert NodeConfig().raft_config().read_lease is False  # off by default
    core = NodeConfig(read_lease=True, lease_drift_ms=60).raft_config()  # 50 ms ticks
    assert core.read_lease and core.lease_drift_ticks == 2  # rounded up, never down
    assert core.lease_ticks == 6 - 1 - 2
