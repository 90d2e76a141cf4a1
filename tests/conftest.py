"""Shared by every test folder."""

from dynamicrl.core.video import select_gl

# MuJoCo reads MUJOCO_GL once, when it is first imported, and any test may import it first (by
# making a MuJoCo env): choose the offscreen back-end before that, as the services do.
select_gl()
