"""The wire contract of DynamicRL: message models, envelope, codec, topics, sockets.

This package imports nothing from ``services`` or ``clients``; everything that
crosses a socket is defined here and nowhere else. ``PROTOCOL_VERSION`` is the
contract's own ``major.minor`` version, separate from the package version: a
peer with another major version is refused. A minor version only adds message
types or optional fields; schemas are strict, so an older peer refuses what it
does not know with a clear error instead of misreading it.
"""

PROTOCOL_VERSION = "1.6"
