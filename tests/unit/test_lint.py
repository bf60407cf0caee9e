"""The linter and the formatter, as CI runs them: ruff with the settings of pyproject.toml.

``target-version = "py39"`` makes syntax newer than Python 3.9 an error (3006
onedir before 3006.27 runs Python 3.10; a pip-installed 3006 may run 3.9),
and FA102 refuses ``X | Y`` annotations 3.9 cannot evaluate. ``ruff format
--check`` fails on any file the formatter would change: run ``ruff format .``.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [["check", "--output-format", "concise"], ["format", "--check"]],
    ids=["lint", "format"],
)
def test_ruff_finds_nothing(command):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
