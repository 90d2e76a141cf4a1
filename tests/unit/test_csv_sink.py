"""metrics.csv keeps one header: a resumed run writes under the columns the file already has."""

import csv

from dynamicrl.protocol.messages import TrainMetrics
from dynamicrl.services.logger.sinks import CsvSink


def metrics(iteration: int, hyperparameters: dict) -> TrainMetrics:
    return TrainMetrics(
        iteration=iteration,
        env_steps=100 * iteration,
        sps=50.0,
        episodes=1,
        values={"lr": 1e-3},
        hyperparameters=hyperparameters,
    )


def test_a_resumed_run_writes_under_the_files_header(tmp_path):
    path = tmp_path / "metrics.csv"
    first = CsvSink(path)
    first.write(metrics(1, {"ppo.lr": 1e-3}))
    first.close()

    resumed = CsvSink(path)  # newer code reports one more hyperparameter, and in another sort position
    resumed.write(metrics(2, {"ppo.anneal_lr": True, "ppo.lr": 5e-4}))
    resumed.close()

    rows = list(csv.reader(path.read_text().splitlines()))
    assert len(rows) == 3 and all(len(row) == len(rows[0]) for row in rows)
    by_name = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert [r["iteration"] for r in by_name] == ["1", "2"]
    assert [r["ppo.lr"] for r in by_name] == ["0.001", "0.0005"]
    assert "ppo.anneal_lr" not in rows[0]
