"""Entry point Salt's loader calls to find the ``relay`` engine and returner.

Registered in pyproject.toml under the ``salt.loader`` group (callable style,
see Salt's ``loader/__init__.py: _module_dirs``). Salt passes nothing and
expects ``{"engines": [dir, ...], "returners": [dir, ...]}``.
"""

from __future__ import annotations

import pathlib

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def _module_dir(kind):
    # A wheel carries the loader modules inside the package (hatch
    # force-include); a source checkout or editable install has them at the
    # repository root, where saltutil.sync_* also finds them.
    installed = _PACKAGE_DIR / "salt_modules" / kind
    if installed.is_dir():
        return str(installed)
    return str(_PACKAGE_DIR.parent / f"_{kind}")


def get_dirs() -> dict[str, list[str]]:
    return {"engines": [_module_dir("engines")], "returners": [_module_dir("returners")]}
