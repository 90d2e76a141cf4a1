"""The shared RL core: what every service and client builds on, and nothing that runs.

Algorithms (registry, interfaces, PPO), observation/reward normalisation, env
construction and env-state capture, the run config and its tunables, and the
checkpoint format. It imports ``dynamicrl.protocol`` and libraries only, never
a service or a client (tests/unit/test_layers.py checks it).
"""
