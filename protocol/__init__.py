"""The wire contract of DynamicRL: message models, envelope, codec, topics, sockets.

This package imports nothing from ``services`` or ``clients``; everything that
crosses a socket is defined here and nowhere else. ``PROTOCOL_VERSION`` is the
contract's own ``major.minor`` version, separate from the package version: a
peer with another major version is refused, a newer minor is accepted.
"""

PROTOCOL_VERSION = "1.0"
