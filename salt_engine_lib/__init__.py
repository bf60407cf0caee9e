"""salt-relay: Salt master event bus -> broker -> SQL job cache.

Everything here imports and runs without a Salt loader: the Salt modules in
``_engines/`` and ``_returners/`` pass ``__opts__`` and friends in.
"""

__version__ = "0.1.0"
