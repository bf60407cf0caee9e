"""Free TCP ports, on 127.0.0.1 only (nothing here listens on other addresses)."""

import contextlib
import socket

LOOPBACK = "127.0.0.1"


def free_ports(count):
    """``count`` distinct ports free on 127.0.0.1 right now.

    All are held open until the last is chosen, so they differ; another
    process may still take one before the caller binds it.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port():
    """A port on 127.0.0.1 nothing listens on (connections to it are refused)."""
    return free_ports(1)[0]
