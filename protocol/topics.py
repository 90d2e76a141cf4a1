"""Bus topics: dotted, family first, so a prefix subscribes to a family.

A message's topic is its ``TYPE`` (``Message.topic()``), except ``ExternalSample``
whose topic is ``external.<stream>``; these constants name the families and the
topics services publish, so no code spells a topic as a bare string.
"""

from .messages import EpisodeStats, ExternalSample, RunStateChanged, TrainMetrics

METRICS = "metrics."
CONTROL = "control."
EXTERNAL = ExternalSample.TOPIC_PREFIX
ALL = ""

METRICS_TRAIN = TrainMetrics.TYPE
METRICS_EPISODE = EpisodeStats.TYPE
CONTROL_STATE = RunStateChanged.TYPE


def matches(topic: str, prefix: str) -> bool:
    """True when ``topic`` is in the family ``prefix`` (ZeroMQ's own prefix rule)."""
    return topic.startswith(prefix)
