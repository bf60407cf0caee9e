"""The linter, as CI runs it: ruff with the settings of pyproject.toml.

``target-version = "py39"`` makes syntax newer than Python 3.9 an error (3006
onedir before 3006.27 runs Python 3.10; a pip-installed 3006 may run 3.9),
and FA102 refuses ``X | Y`` annotations 3.9 cannot evaluate.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
