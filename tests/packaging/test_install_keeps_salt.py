"""Installing salt-relay must never change the Salt it extends.

The wheel is built from this checkout and installed the way the README tells
users to (``pip install salt_relay-*.whl``, with dependencies) into a copy of
the venv that runs pytest, whatever Salt that venv holds. When ``salt`` was a
dependency, pip replaced Salt 3006.30 by 3008.4 there: 3006.30's own pin
``certifi>=2026.10.23`` is not on the index, so pip took the installed Salt for
broken and "fixed" it.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE_PACKAGES = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
SALT_PIP_REFUSAL = "'salt-pip' is only meant to be used from a Salt onedir"


def user_pip_environment():
    """The environment of a user's shell: pip's own config is kept, but nothing
    that would quietly constrain the install or point Python at this checkout."""
    env = dict(os.environ)
    for name in (
        "PIP_CONSTRAINT",
        "PIP_NO_DEPS",
        "PIP_NO_DEPENDENCIES",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
    ):
        env.pop(name, None)
    return env


def run(*command, cwd, timeout):
    # cwd is never the checkout: `python -c` puts its cwd first on sys.path,
    # which would import salt_engine_lib from here instead of the install.
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=user_pip_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ok(*command, cwd, timeout=60):
    result = run(*command, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}\nstdout tail:\n{result.stdout[-3000:]}\nstderr tail:\n{result.stderr[-3000:]}"
    )
    return result.stdout.strip()


def salt_version(python, cwd):
    return run_ok(python, "-c", 'import importlib.metadata as m; print(m.version("salt"))', cwd=cwd)


def mount_overlay(lower, merged):
    """Show `lower` at `merged` with every write going to a sibling directory.

    Takes well under a second where copying a venv (300-470 MB, ~17,000 files)
    took 11-60 s here. The kernel never writes to the lower directory, so the
    running venv stays untouched by construction. Needs root; False elsewhere.
    """
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    upper, work = merged.parent / "overlay-upper", merged.parent / "overlay-work"
    for directory in (upper, work, merged):
        directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", merged],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        for directory in (upper, work, merged):
            directory.rmdir()
    return mounted.returncode == 0


@contextlib.contextmanager
def copy_of_running_venv(destination):
    """A writable copy of the venv that runs pytest, so the install under test cannot touch it.

    An overlay mount where possible, else shutil.copytree. Either keeps the
    symlink to the base interpreter and its own pyvenv.cfg, so its python runs
    with the copy as sys.prefix. Scripts in its bin/ still name the original
    venv in their shebangs: only `python -m ...` is safe.
    """
    started = time.monotonic()
    how = "overlay" if mount_overlay(sys.prefix, destination) else "copytree"
    if how == "copytree":
        shutil.copytree(sys.prefix, destination, symlinks=True)
    try:
        python = destination / "bin" / "python"
        seen = run_ok(
            python,
            "-c",
            "import site, sys; print(sys.prefix); print(*site.getsitepackages(), sep='\\n')",
            cwd=destination,
        ).splitlines()
        assert seen == [str(destination), str(destination / SITE_PACKAGES)]
        print(f"\ncopied {sys.prefix} to {destination} by {how} in {time.monotonic() - started:.1f} s")
        yield python
    finally:
        if how == "overlay":
            subprocess.run(["umount", destination], check=True, timeout=60)


@pytest.fixture(scope="module")
def relay_wheel(tmp_path_factory):
    wheel_dir = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheel_dir, REPO_ROOT]
    # Without hatchling here (the CI venvs lack it), pip's build isolation
    # fetches it from the configured index.
    if importlib.util.find_spec("hatchling") is not None:
        command.insert(4, "--no-build-isolation")
    run_ok(*command, cwd=wheel_dir, timeout=120)
    wheels = sorted(wheel_dir.glob("salt_relay-*.whl"))
    assert len(wheels) == 1, f"expected one salt_relay wheel, got {wheels}"
    return wheels[0]


def wheel_version(wheel):
    return wheel.name.split("-")[1]


def test_pip_install_of_the_wheel_keeps_the_installed_salt(relay_wheel, tmp_path):
    started = time.monotonic()
    venv = tmp_path / "venv"
    with copy_of_running_venv(venv) as python:
        salt_before = salt_version(python, cwd=tmp_path)
        assert salt_before == importlib.metadata.version("salt")

        install_started = time.monotonic()
        run_ok(python, "-m", "pip", "install", "--disable-pip-version-check", relay_wheel, cwd=tmp_path, timeout=150)
        installed_in = time.monotonic() - install_started

        salt_after = salt_version(python, cwd=tmp_path)
        print(
            f"{sys.prefix}: Salt {salt_before} before, {salt_after} after installing {relay_wheel.name} "
            f"(install {installed_in:.1f} s, total {time.monotonic() - started:.1f} s)"
        )
        assert salt_after == salt_before

        # The copy had salt-relay installed editable from this checkout; the wheel must replace it.
        relay_location = pathlib.Path(run_ok(python, "-c", "import salt_engine_lib; print(salt_engine_lib.__file__)", cwd=tmp_path))
        assert relay_location.is_relative_to(venv / SITE_PACKAGES), relay_location
        run_ok(python, "-c", "import salt.config, salt_engine_lib.engine", cwd=tmp_path)

        shown = run_ok(python, "-m", "pip", "show", "salt-relay", cwd=tmp_path).splitlines()
        assert f"Version: {wheel_version(relay_wheel)}" in shown, shown
        assert f"Location: {venv / SITE_PACKAGES}" in shown, shown
        assert not any(line.startswith("Editable project location") for line in shown), shown


def test_salt_pip_install_of_the_wheel_keeps_the_installed_salt(relay_wheel, tmp_path):
    salt_pip = pathlib.Path(sys.prefix) / "bin" / "salt-pip"
    if not salt_pip.exists():
        pytest.skip(f"this Salt has no salt-pip ({salt_pip})")

    # salt.scripts.salt_pip runs pip only inside a Salt onedir: when
    # _get_onedir_env_path() finds no sys.RELENV (any pip-installed Salt) it
    # prints SALT_PIP_REFUSAL and exits EX_GENERIC before reading any config or
    # starting pip. In a onedir the probe only runs `pip --version`, so either
    # way it leaves the running venv alone.
    probe = run(sys.executable, salt_pip, "--version", cwd=tmp_path, timeout=60)
    if SALT_PIP_REFUSAL in probe.stderr:
        assert probe.returncode != 0
        pytest.skip("salt-pip refuses outside a Salt onedir (salt.scripts.salt_pip: _get_onedir_env_path() is None without sys.RELENV)")
    assert probe.returncode == 0, probe.stderr[-3000:]

    venv = tmp_path / "venv"
    with copy_of_running_venv(venv) as python:
        salt_before = salt_version(python, cwd=tmp_path)
        run_ok(python, venv / "bin" / "salt-pip", "install", relay_wheel, cwd=tmp_path, timeout=150)
        salt_after = salt_version(python, cwd=tmp_path)
        print(f"{sys.prefix}: Salt {salt_before} before, {salt_after} after salt-pip install")
        assert salt_after == salt_before
