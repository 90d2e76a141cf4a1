"""Rules: clients that steer a run from what they watch on the bus, through the controller.

A rule is a person's patch made by a program: it subscribes (Monitor) to an
external stream (``external.<stream>``) and to ``metrics.train``, decides, and
sends a ``PatchRequest`` to the controller (ControlClient) with its own author
(``rule:engagement``). So the controller validates it exactly like a person's
patch, and every application lands in ``patches.jsonl`` and on the bus
(``control.patch``). A refused patch is logged and the rule keeps running; so
is a controller that does not answer (it may be restarting).

:class:`EngagementRule`: when the stream's ``engagement`` index is below
``low``, raise a parameter by ``step`` (up to ``maximum``); when it is above
``high``, lower it by ``step`` (down to ``minimum``); at most once every
``every_iterations`` training iterations. A BCI index is noisy, so with
``smooth_s`` the rule acts on an exponential moving average with that time
constant, on the stream's own clock (its timestamps), not on the latest value.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field

from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout
from dynamicrl.clients.monitor import Monitor
from dynamicrl.protocol.codec import ProtocolError
from dynamicrl.protocol.messages import ExternalSample, ParamsRequest, PatchRequest, TrainMetrics, stream_topic
from dynamicrl.protocol.topics import METRICS_TRAIN

log = logging.getLogger(__name__)


@dataclass
class EngagementRule:
    """Raise ``param`` while engagement is low, lower it back while it is high."""

    control: str
    bus_out: str
    param: str = "ppo.ent_coef"
    low: float = 0.3
    high: float | None = None  # None: never lower it back
    minimum: float = 0.0
    maximum: float = 0.05
    step: float = 0.005
    every_iterations: int = 5
    stream: str = "mock-bci"
    index: str = "engagement"
    author: str = "rule:engagement"
    timeout_s: float = 2.0
    smooth_s: float = 0.0  # time constant of the engagement's moving average (0: the latest value)
    #: what happened, for tests and for the log: (iteration, engagement, old, new, outcome)
    decisions: list[tuple[int, float, float, float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.minimum <= self.maximum:
            raise ValueError(f"--min {self.minimum} is above --max {self.maximum}")
        if self.step <= 0 or self.every_iterations < 1:
            raise ValueError("step must be > 0 and every_iterations >= 1")
        if self.smooth_s < 0:
            raise ValueError(f"--smooth {self.smooth_s} is negative")
        if self.high is not None and self.high < self.low:
            raise ValueError(f"--high {self.high} is below --low {self.low}")
        self.topic = stream_topic(self.stream)
        self.engagement: float | None = None
        self.engagement_at: float | None = None  # stream time of the last sample behind ``engagement``
        self.value: float | None = None
        self.iteration: int | None = None
        self.last_patch_iteration: int | None = None
        self.patches = self.rejected = 0
        self._stop = False

    # -- decisions ---------------------------------------------------------------------------------
    def target(self, engagement: float, value: float) -> float | None:
        """The new value for ``engagement`` when the parameter stands at ``value``, or None to leave it."""
        if engagement < self.low and value < self.maximum:
            new = min(value + self.step, self.maximum)
        elif self.high is not None and engagement > self.high and value > self.minimum:
            new = max(value - self.step, self.minimum)
        else:
            return None
        new = max(min(round(new, 12), self.maximum), self.minimum)
        return new if new != value else None

    def on_sample(self, message: ExternalSample) -> None:
        if self.index not in message.derived:
            return
        value, at = message.derived[self.index], float(message.timestamps[-1]) if len(message.timestamps) else None
        if self.smooth_s > 0 and self.engagement is not None and at is not None and self.engagement_at is not None:
            weight = 1.0 - math.exp(-max(at - self.engagement_at, 0.0) / self.smooth_s)
            value = self.engagement + weight * (value - self.engagement)
        self.engagement, self.engagement_at = value, at

    def on_metrics(self, message: TrainMetrics, client: ControlClient) -> None:
        self.iteration = message.iteration
        seen = message.hyperparameters.get(self.param)
        # after our own patch the next iteration may still report the old value: trust ours until then
        ours_pending = self.last_patch_iteration is not None and message.iteration <= self.last_patch_iteration
        if isinstance(seen, (int, float)) and not isinstance(seen, bool) and not ours_pending:
            self.value = float(seen)
        if self.engagement is None or self.value is None:
            return
        if (
            self.last_patch_iteration is not None
            and message.iteration - self.last_patch_iteration < self.every_iterations
        ):
            return
        new = self.target(self.engagement, self.value)
        if new is None:
            return
        self.last_patch_iteration = message.iteration  # also after a refusal: at most one try per window
        outcome = self.send(client, new)
        self.decisions.append((message.iteration, self.engagement, self.value, new, outcome))

    def send(self, client: ControlClient, new: float) -> str:
        request = PatchRequest(changes={self.param: new}, author=self.author, wait=False)
        try:
            reply = client.call(request)
        except ControlError as exc:
            self.rejected += 1
            log.warning("rule: patch %s=%r refused: %s (the rule keeps running)", self.param, new, exc)
            return f"refused: {exc}"
        except (RequestTimeout, ProtocolError) as exc:
            log.warning("rule: no answer from the controller for %s=%r: %s", self.param, new, exc)
            return f"no answer: {exc}"
        log.info(
            "rule: engagement %.3f at iteration %s: %s %r -> %r (patch %s, %s)",
            self.engagement,
            self.iteration,
            self.param,
            self.value,
            new,
            reply.patch_id,
            reply.status.value,
        )
        self.value = new
        self.patches += 1
        return reply.status.value

    def initial_value(self, client: ControlClient) -> None:
        """The parameter's current value from the controller (else it comes with the next metrics.train)."""
        try:
            reply = client.call(ParamsRequest())
        except (ControlError, RequestTimeout, ProtocolError) as exc:
            log.info("rule: could not read %s yet (%s); waiting for metrics.train", self.param, exc)
            return
        for row in reply.params:
            if row.name == self.param:
                if isinstance(row.value, (int, float)) and not isinstance(row.value, bool):
                    self.value = float(row.value)
                return
        log.warning("rule: the controller has no tunable %s; every patch will be refused", self.param)

    # -- the loop ----------------------------------------------------------------------------------
    def stop(self, *_args) -> None:
        self._stop = True

    def run(self, duration: float | None = None) -> int:
        """Watch and steer until ``duration`` s pass (None: until SIGTERM/SIGINT or stop()); patches sent."""
        deadline = None if duration is None else time.monotonic() + duration
        with (
            Monitor(self.bus_out, (self.topic, METRICS_TRAIN)) as monitor,
            ControlClient(self.control, timeout_s=self.timeout_s, retries=1) as client,
        ):
            self.initial_value(client)
            log.info(
                "rule: watching %s and %s; %s in [%g, %g], step %g, low %g, high %s, every %d iteration(s)",
                self.topic,
                METRICS_TRAIN,
                self.param,
                self.minimum,
                self.maximum,
                self.step,
                self.low,
                self.high,
                self.every_iterations,
            )
            while not self._stop and (deadline is None or time.monotonic() < deadline):
                try:
                    event = monitor.receive(0.25)
                except ProtocolError as exc:  # another major version on the bus: the monitor logged it; go on
                    log.debug("rule: %s", exc)
                    continue
                if event is None:
                    continue
                if isinstance(event.message, ExternalSample):
                    self.on_sample(event.message)
                elif isinstance(event.message, TrainMetrics):
                    self.on_metrics(event.message, client)
        return self.patches


def run_engagement_rule(rule: EngagementRule, duration: float | None = None) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, rule.stop)
    return rule.run(duration)


__all__ = ["EngagementRule", "run_engagement_rule"]
