"""The dashboard's parts without a run: the token file, failed logins, the event buffer, a risky --host."""

from __future__ import annotations

import json

from click.testing import CliRunner

from dynamicrl.clients.cli.dashboard_cmd import dashboard
from dynamicrl.clients.dashboard.auth import FailedLogins, load_or_create_token
from dynamicrl.clients.dashboard.events import EventHub


def test_the_token_file_is_made_0600_once_and_then_read(tmp_path):
    path = tmp_path / "deep" / "dashboard.token"
    token = load_or_create_token(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(path) == token  # --token-file chooses the token
    path.write_text("mine\n")
    assert load_or_create_token(path) == "mine"


def test_failed_logins_lock_an_address_out_for_the_window_only(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("dynamicrl.clients.dashboard.auth.time.monotonic", lambda: now[0])
    failures = FailedLogins(limit=3, window_s=60)
    for _ in range(3):
        assert failures.locked_for_s("10.0.0.1") == 0
        failures.record("10.0.0.1")
    assert failures.locked_for_s("10.0.0.1") == 60 and failures.locked_for_s("10.0.0.2") == 0
    now[0] += 30
    assert failures.locked_for_s("10.0.0.1") == 30
    now[0] += 31
    assert failures.locked_for_s("10.0.0.1") == 0 and "10.0.0.1" not in failures.by_address  # forgotten


def test_a_reader_behind_the_buffer_learns_how_many_it_lost():
    hub = EventHub("tcp://127.0.0.1:1", None, "t", buffer=4)
    for n in range(10):
        hub.append("bus", {"n": n})
    batch = hub.after(2)
    assert batch.missed == 4 and [e.id for e in batch.events] == [7, 8, 9, 10]
    assert json.loads(batch.events[0].data) == {"id": hub.event_id(7), "n": 6}
    assert hub.after(10).events == [] and hub.after(10).missed == 0
    assert hub.cursor(hub.event_id(8)) == (8, False)
    assert hub.cursor("1-8") == (0, True)  # another dashboard's id
    assert hub.cursor(None) == (10, False)  # a new reader starts with what comes next
    assert hub.stats()["dropped_by_readers"] == 4


def test_a_host_beyond_loopback_is_warned_about_by_name(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails, and no packet is sent
    done = CliRunner().invoke(dashboard, ["--host", "192.0.2.1", "--token-file", str(tmp_path / "t")])
    assert done.exit_code == 1
    assert "warning: --host 192.0.2.1 serves the dashboard beyond this machine without TLS" in done.output
    assert "--host 192.0.2.1 --port 8650: cannot listen" in done.output
