"""Print the installed Salt's own runtime requirements, one per line, for pip -r.

Read from Salt's installed metadata with the environment markers evaluated
and extras skipped; the certifi pin is relaxed to plain ``certifi`` (the
newest patches want a certifi release some indexes lack). Run it with the
venv's python: it reads that venv's Salt. Used by scripts/venv.sh.
"""

import importlib.metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: the copy pip vendors
    from pip._vendor.packaging.requirements import Requirement

RELAXED = {"certifi"}


def main():
    for line in importlib.metadata.requires("salt") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in RELAXED:
            print(requirement.name)
            continue
        requirement.marker = None
        print(requirement)


if __name__ == "__main__":
    main()
