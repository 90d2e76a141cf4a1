"""DynamicRL: interactive reinforcement learning on a ZeroMQ bus.

The import namespace of the repository's top-level folders: ``dynamicrl/``
holds a link to each, so ``protocol/`` is ``dynamicrl.protocol``, and likewise
``core/`` (the shared RL core), ``services/``, ``clients/`` and ``configs/``.
"""

__version__ = "0.1.0"
