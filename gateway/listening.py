"""The listening socket's address, checked before a server starts on it."""

from __future__ import annotations

import socket
import sys

__all__ = ("listen",)


def listen(command: str, host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port`` without ``SO_REUSEPORT``, or ``None`` (said on stderr)
    when another process holds the address.

    granian binds with ``SO_REUSEPORT``, so a second ``serve`` on a busy port started without a
    word and the kernel split the connections between two gateways; a banner with a key and curl
    lines would likewise go to whatever holds the port. A plain bind fails there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        print(
            f"gmi-gateway {command}: cannot listen on {host}:{port}: {exc.strerror}"
            " (is another gateway running there? choose another with --port)",
            file=sys.stderr,
        )
        return None
    return listening
