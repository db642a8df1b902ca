"""`univrs completion bash|zsh|fish` (docs/cli.md "Shell completion")."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from univrs.cli import main

BIN = pathlib.Path(sys.executable).parent


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --no-files")],
)
def test_scripts(shell: str, marker: str) -> None:
    result = CliRunner().invoke(main, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert "_UNIVRS_COMPLETE" in result.output and marker in result.output


def test_unknown_shell_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["completion", "tcsh"])
    assert result.exit_code == 2 and "bash" in result.output


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.skipif(not (BIN / "univrs").exists(), reason="the univrs script is not installed")
def test_bash_completes_commands_and_choices() -> None:
    """The script, sourced in a real bash, completes a command and an option's choices."""
    script = """
        eval "$(univrs completion bash)"
        COMP_WORDS=(univrs clu); COMP_CWORD=1; _univrs_completion univrs; echo "${COMPREPLY[@]}"
        COMPREPLY=(); COMP_WORDS=(univrs node start --log-format ""); COMP_CWORD=4
        _univrs_completion univrs; echo "${COMPREPLY[@]}"
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["cluster", "text json"], out.stdout + out.stderr
