"""A live CartPole run fuzzed on its four bound sockets by an authenticated hostile peer (#16).

The peer holds the user's client key, as a buggy or hostile local tool would, and sends ``FRAMES``
seeded malformed messages on each socket at once: the controller's command ROUTER (as a REQ and as a
DEALER), the bus in (a PUB), the bus out (an XSUB sending upstream) and the learner's data ROUTER (a
DEALER); the kinds are listed in ``tests/fuzzing.py``, shared with ``bench/fuzz.py`` (10,000+ per
socket, printed). Then: no process died; every request on the command and data sockets got one
typed ``ErrorReply`` (none of the frames exceeds a socket's MAXMSGSIZE, so the transport drops
none); ``status`` answered throughout (how fast: bench/fuzz.py); params, patches.jsonl and metrics.csv are as
the real run alone made them (the rows from before unchanged, then only consecutive iterations the
learner trained); the bus's gate dropped every hostile bus message; the run trains on; and the
controller's and the learner's RSS came back to within 50 MB of their baselines.
"""

from __future__ import annotations

import fuzzing
from helpers import Run

FRAMES = 2000
SEED = 16
#: small, fast iterations, and a budget no test reaches
OVERRIDES = ["env.num_envs=2", "algo.num_steps=16", "run.total_env_steps=100000000", "logger.console=false"]


def test_a_live_run_survives_thousands_of_hostile_frames_on_every_socket(tmp_path):
    with Run(tmp_path, OVERRIDES) as run:
        run.start()
        run.wait_iteration(3, timeout=90)
        result = fuzzing.fuzz(
            run,
            FRAMES,
            seed=SEED,
            arrays_to_controller=True,
            many_frames_on_bus=True,
        )
        problems = result.problems(timed=False)  # how fast status answered is bench/fuzz.py's to print
        assert not problems, "\n".join([*problems, run.logs()[-6000:]])
        for name in fuzzing.SOCKETS:
            assert result.sockets[name].sent == FRAMES, result.sockets[name]
        # the run trains on
        iteration = run.status().ltime.iteration
        run.wait_iteration(iteration + 2, timeout=30)
        run.check_alive()
