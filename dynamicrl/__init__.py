"""DynamicRL: interactive reinforcement learning on a ZeroMQ bus.

The code lives in the repository's top-level ``protocol/``, ``services/`` and
``clients/`` folders, installed as ``dynamicrl.protocol``, ``dynamicrl.services``
and ``dynamicrl.clients``.
"""

__version__ = "0.1.0"
