"""What a third-party client does to connect, from docs/protocol.md alone: pyzmq, no dynamicrl."""

from pathlib import Path

import zmq
import zmq.auth

KEYS = Path("~/.dynamicrl/keys").expanduser()


def plain_curve(sock: zmq.Socket, role: str = "client", name: str = "client", keys: Path = KEYS) -> None:
    """docs/protocol.md, "Authentication": the server's public key and the identity's key pair, set
    on the socket before it connects. An identity without a pair gets one made into the directory
    (enrolled: the servers admit every key found there)."""
    if not (keys / role / f"{name}.key_secret").exists():
        (keys / role).mkdir(mode=0o700, parents=True, exist_ok=True)
        zmq.auth.create_certificates(keys / role, name)
    sock.curve_serverkey = zmq.auth.load_certificate(keys / "server" / "server.key")[0]
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(keys / role / f"{name}.key_secret")
