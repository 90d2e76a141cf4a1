"""What a third-party client does to connect, from docs/protocol.md alone: pyzmq, no dynamicrl."""

from pathlib import Path

import zmq
import zmq.auth

KEYS = Path("~/.dynamicrl/keys").expanduser()


def plain_curve(sock: zmq.Socket, keys: Path = KEYS) -> None:
    """docs/protocol.md, "Authentication": the server's public key and the user's client key pair,
    set on the socket before it connects."""
    sock.curve_serverkey = zmq.auth.load_certificate(keys / "server" / "server.key")[0]
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(keys / "client" / "client.key_secret")
