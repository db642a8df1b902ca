"""Go programs of the bench, built on first use from Debian's Go packages (nothing downloaded).

Two load generators are written in Go: etcd's (``etcd_loadgen``, with etcd's own client) and
univrs's (``univrs_loadgen``, ``scripts/bench --loadgen go``). ``build`` compiles one (the
``.go`` files of its folder) in GOPATH mode against the sources Debian's ``golang-*-dev``
packages install under ``GOPATH``, into ``~/.cache/univrs-bench`` (or ``$XDG_CACHE_HOME``),
once per version of its sources: the binary's name carries their digest, so an edited source
is built again and an unchanged one is not. ``missing`` says what a machine lacks to build
one (a message for the operator), or None.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

__all__ = ["GOPATH", "build", "missing"]

GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their sources


def missing(packages: dict[str, str]) -> str | None:
    """Why a program importing ``packages`` (Go import path -> the Debian package that
    provides it) cannot be built here, or None."""
    if shutil.which("go") is None:
        return "the Go toolchain is not installed (Debian: apt-get install golang-go)"
    absent = [
        deb for path, deb in packages.items() if not (pathlib.Path(GOPATH) / "src" / path).is_dir()
    ]
    if absent:
        return f"Go sources missing (Debian: apt-get install {' '.join(sorted(set(absent)))})"
    return None


def build(folder: pathlib.Path, name: str) -> pathlib.Path:
    """The binary of the Go program whose sources (package main) are the ``.go`` files of
    ``folder``, built once per version of its sources."""
    sources = sorted(folder.glob("*.go"))
    if not sources:
        raise FileNotFoundError(f"no Go sources in {folder}")
    hasher = hashlib.sha256()
    for path in sources:
        hasher.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest = hasher.hexdigest()[:12]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    folder = cache / "univrs-bench"
    binary = folder / f"{name}-{digest}"
    if binary.exists():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    print(f"building {name} (once per version of its source) ...", file=sys.stderr)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOCACHE": str(folder / "gocache"),
        "GOFLAGS": "",
    }
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    subprocess.run(["go", "build", "-o", str(tmp), *map(str, sources)], env=env, check=True)
    tmp.rename(binary)
    return binary
