"""Bus topics: dotted, family first, so a prefix subscribes to a family.

A message's topic is its ``TYPE`` (``Message.topic()``), except ``ExternalSample``
whose topic is ``external.<stream>``; these constants name the families and the
topics services publish, so no code spells a topic as a bare string.
"""

from .messages import ExternalSample, PreviewsSaved, SystemMetrics, TrainMetrics, VideoSaved

METRICS = "metrics."
CONTROL = "control."
EXTERNAL = ExternalSample.TOPIC_PREFIX

METRICS_TRAIN = TrainMetrics.TYPE
METRICS_SYS = SystemMetrics.TYPE
METRICS_VIDEO = VideoSaved.TYPE
METRICS_PREVIEWS = PreviewsSaved.TYPE


def matches(topic: str, prefix: str) -> bool:
    """True when ``topic`` is in the family ``prefix`` (ZeroMQ's own prefix rule)."""
    return topic.startswith(prefix)
