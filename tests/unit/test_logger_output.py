"""The logger's outputs, without a run: marker steps, the console's throttle, the patch line."""

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from dynamicrl.core.patch_text import entry_line, patch_line
from dynamicrl.protocol.messages import JournalEntry, LogicalTime, Position, TrainMetrics, ValueChange
from dynamicrl.services.logger.sinks import ConsoleSink, TensorBoardSink


def text_steps(logdir) -> list[tuple[str, int]]:
    (path,) = logdir.glob("events.out.tfevents.*")
    return [
        (value.tag, event.step)
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "text"
    ]


def test_markers_never_share_a_step_and_a_resumed_run_starts_past_the_checkpoint(tmp_path):
    first = TensorBoardSink(tmp_path / "first")
    for tag, step in [("events/state", 0), ("events/state", 512), ("events/state", 512), ("events/patch", 512)]:
        first.text(tag, "x", step)
    first.text("events/state", "x", 1024)
    first.close()
    assert text_steps(tmp_path / "first") == [
        ("events/state", 0),
        ("events/state", 512),
        ("events/state", 513),  # a second marker at one env step goes one further
        ("events/patch", 512),  # each series counts on its own
        ("events/state", 1024),
    ]
    resumed = TensorBoardSink(tmp_path / "resumed")
    resumed.purge_from(769)  # resumed from a checkpoint at env step 768
    resumed.text("events/state", "x", 0)  # the logger has seen no iteration yet
    resumed.text("events/state", "x", 1024)
    resumed.close()
    assert text_steps(tmp_path / "resumed") == [("events/state", 769), ("events/state", 1024)]


def test_the_console_prints_the_first_iteration_then_the_last_held_one_on_close(capsys):
    console = ConsoleSink(total_env_steps=1000, every_s=3600)
    for i in (1, 2, 3):
        console.write(TrainMetrics(iteration=i, env_steps=100 * i, sps=50.0, episodes=0, values={}))
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["1"]
    console.close()
    console.close()  # printed once
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["3"]


def test_a_patch_reads_as_one_line_from_a_service_and_from_the_journal():
    position = Position(service="learner.1", ltime=LogicalTime(iteration=34, env_step=8704), minibatch=6)
    line = patch_line("3", "cli@root", {"ppo.lr": (0.0025, 0.0001)}, position)
    assert line == (
        "patch 3 by cli@root: ppo.lr 0.0025 -> 0.0001 at iteration 34, env step 8704, minibatch 6 (learner.1)"
    )
    entry = JournalEntry(
        patch_id="3",
        author="cli@root",
        service="envrunner.2",
        changes={"envrunner.reward_scale": ValueChange(old=1.0, new=0.5), "x": ValueChange(old=None, new="a")},
        ltime=LogicalTime(iteration=7, env_step=1800),
        time=0.0,
    )
    assert entry_line(entry) == (
        "patch 3 by cli@root: envrunner.reward_scale 1.0 -> 0.5, x None -> 'a' at iteration 7, env step 1800 "
        "(envrunner.2)"
    )
