"""The dashboard's REST API and event stream against live runs (real processes, free ports, httpx).

One endless CartPole run and its dashboard: every endpoint; a rejected patch (422, each value's
message by name, nothing changed) and an applied one; bad bodies; the token (missing, wrong,
right, cookie); cross-site commands refused; the final state once the run stops. A dashboard
started before its run answers 503 and recovers. The event stream resumes from Last-Event-ID
with no event lost or repeated, reports a gap it cannot fill, and a stalled reader blocks nobody;
a finite run watched by ten readers ends bitwise where the same run without a dashboard, and
with CURVE off, does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import httpx
import pytest
from helpers import wait_until
from helpers_dashboard import URL, Dashboard
from test_checkpoint_resume import final_hash

from dynamicrl.protocol.messages import RunState

pytestmark = pytest.mark.e2e

ENDLESS = ["env.num_envs=2", "algo.num_steps=64", "run.total_env_steps=100000000", "logger.console=false"]
SMALL = ["env.num_envs=2", "algo.num_steps=64", "run.total_env_steps=8192", "logger.console=false"]  # 64 its


def cli_state(run) -> str:
    done = run.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return done.json["state"]


def test_every_endpoint_against_a_live_run(runs):
    run = runs("live", ENDLESS).start()
    with Dashboard(run) as board:
        http = board.http
        run.wait_iteration(3, timeout=120)
        status = http.get("/api/status").json()
        assert status["state"] == "running" and status["reachable"] and status["run_id"] == run.run_dir.name
        assert {s["role"] for s in status["services"]} >= {"learner", "envrunner", "logger"}
        rows = {row["name"]: row for row in http.get("/api/params").json()["params"]}
        assert rows["ppo.lr"]["value"] == 0.0025 and rows["ppo.lr"]["apply"] == "next_minibatch"
        metrics = http.get("/api/metrics").json()
        assert metrics["columns"][:2] == ["iteration", "env_steps"] and "ppo.lr" in metrics["columns"]
        assert [row[0] for row in metrics["rows"]] == list(range(1, len(metrics["rows"]) + 1))
        assert http.get("/openapi.json").json()["paths"].keys() >= {"/api/status", "/api/patch", "/api/events"}
        assert "swagger" in http.get("/docs").text.lower()

        # a patch the controller rejects: 422, each value's own message by name, nothing changed
        journal = run.journal_text()
        refused = http.post("/api/patch", json={"changes": {"ppo.lr": -1, "ppo.lrr": 0.1}})
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["error"] == "rejected" and body["message"].startswith("patch rejected, nothing changed")
        assert set(body["problems"]) == {"ppo.lr", "ppo.lrr"}
        lr_problem = body["problems"]["ppo.lr"]
        assert "greater than 0" in lr_problem and "allowed: float in (0, 1]" in lr_problem
        assert "did you mean ppo.lr?" in body["problems"]["ppo.lrr"]
        cli = run.cli("patch", "ppo.lr=-1", "ppo.lrr=0.1")  # the same messages as the CLI's
        assert all(problem in cli.stderr for problem in body["problems"].values()), cli.stderr
        assert run.params()["ppo.lr"] == 0.0025 and run.journal_text() == journal

        applied = http.post("/api/patch", json={"changes": {"ppo.lr": 1e-3}, "author": "test"}).json()
        assert applied["status"] == "applied" and applied["applied"][0]["changes"]["ppo.lr"]["new"] == 1e-3
        entries = http.get("/api/history").json()["entries"]
        assert [(e["patch_id"], e["author"]) for e in entries] == [(applied["patch_id"], "test")]
        later = http.post("/api/patch", json={"changes": {"ppo.ent_coef": 0.01}, "at_iteration": 10_000, "wait": False})
        assert later.json()["status"] == "scheduled", later.text

        # bad input: one error shape, nothing changed
        journal = run.journal_text()
        bad_json = http.post("/api/patch", content=b'{"changes": ', headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and bad_json.json()["error"] == "bad_json", bad_json.text
        unknown = http.post("/api/patch", json={"changes": {"ppo.lr": 1e-3}, "colour": "red"})
        assert unknown.status_code == 422 and unknown.json()["problems"] == {"colour": "Extra inputs are not permitted"}
        too_big = http.post("/api/patch", json={"changes": {"ppo.update_epochs": 10**22}})  # beyond int64
        assert too_big.status_code == 422 and "ppo.update_epochs" in too_big.json()["problems"], too_big.text
        wrong_type = http.post("/api/stop", json={"checkpoint": "soon"})
        assert wrong_type.status_code == 422 and "checkpoint" in wrong_type.json()["problems"], wrong_type.text
        as_json = {"content-type": "application/json"}
        huge = http.post("/api/patch", content=b"[" + b"0," * 100_000 + b"0]", headers=as_json)
        assert huge.status_code == 413 and huge.json()["error"] == "too_large"
        assert http.get("/files/videos/..%2F..%2Fconfig.yaml").status_code == 404
        assert http.get("/files/videos/config.yaml").status_code == 404
        assert http.get("/files/previews/1/..").status_code == 404
        assert run.journal_text() == journal and len(http.get("/api/history").json()["entries"]) == 1
        assert run.params()["ppo.lr"] == 1e-3  # the applied patch's value, untouched by the bad ones

        # pause and resume, seen by `dynamicrl status`
        paused = http.post("/api/pause").json()
        assert paused["already"] is False and paused["pause"] == 1 and paused["positions"]
        assert cli_state(run) == "paused"
        assert http.post("/api/pause", json={}).json()["already"] is True
        scheduled = http.post("/api/checkpoint").json()  # while paused: taken after the resume
        assert scheduled["scheduled"] is True
        assert http.post("/api/resume").json()["already"] is False
        assert cli_state(run) == "running"
        taken = http.post("/api/checkpoint").json()
        listed = wait_until(lambda: http.get("/api/checkpoints").json()["checkpoints"], timeout=60)
        assert taken["path"].endswith(listed[0]["name"]) and listed[0]["kind"] == "manual"
        assert listed[0]["retention"] == "kept: asked for by hand" and listed[0]["bytes"] > 0

        # the token: missing, wrong, right; the cookie from the printed URL; cross-site commands
        with board.anonymous() as stranger:
            assert stranger.get("/api/status").status_code == 401
            assert stranger.get("/").status_code == 401
            wrong = stranger.get("/api/status", headers={"Authorization": "Bearer " + "x" * len(board.token)})
            assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
            assert stranger.post("/api/pause", params={"token": board.token}).status_code == 401  # no link presses
        with board.anonymous() as browser:
            login = browser.get(f"/?token={board.token}", follow_redirects=True)  # the 303 to the page
            assert login.status_code == 200 and "<html" in login.text.lower(), login.text[:200]
            assert "SameSite=Strict" in login.history[0].headers["set-cookie"]
            assert "HttpOnly" in login.history[0].headers["set-cookie"]
            assert login.headers["x-frame-options"] == "DENY"
            assert browser.get("/api/status").status_code == 200  # the cookie alone
            forged = browser.post("/api/pause", headers={"Origin": "http://attacker.example"})
            assert forged.status_code == 403 and forged.json()["error"] == "cross_site"
            framed = browser.post("/api/pause", headers={"Sec-Fetch-Site": "cross-site", "Origin": board.base})
            assert framed.status_code == 403
            assert browser.post("/api/pause").status_code == 403  # the cookie, no Origin: not the page
            assert browser.post("/api/resume", headers={"Origin": board.base}).status_code == 200  # the page itself
        assert cli_state(run) == "running"
        assert "dashboard: a wrong token from 127.0.0.1" in board.log()
        assert "Origin http://attacker.example is not this dashboard" in board.log()
        assert board.token_file.stat().st_mode & 0o777 == 0o600

        # stop: the run ends, and the dashboard shows its final state
        stopping = http.post("/api/stop", json={"checkpoint": True}).json()
        assert stopping["checkpoint"], stopping
        run.finish(timeout=60)
        final = wait_until(lambda: http.get("/api/status").json(), timeout=30)
        assert (final["state"], final["reachable"]) == ("stopped", False)
        gone = http.get("/api/params")
        assert gone.status_code == 503 and gone.json()["error"] == "unreachable", gone.text
        assert "run not reachable" in gone.json()["message"]


def test_failed_logins_are_rate_limited(runs):
    run = runs("locked", ENDLESS)  # no run needed: the door is the dashboard's
    with Dashboard(run) as board, board.anonymous() as guesser:
        guesses = [guesser.get("/api/status", headers={"Authorization": f"Bearer guess{i}"}) for i in range(12)]
        codes = [guess.status_code for guess in guesses]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
        locked = guesser.get("/api/status", headers={"Authorization": f"Bearer {board.token}"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0  # the right token waits too
        assert board.log().count("a wrong token from 127.0.0.1") == 10


def test_a_dashboard_before_its_run_answers_503_then_recovers(runs):
    run = runs("late", ENDLESS)
    with Dashboard(run) as board:
        early = board.http.get("/api/status")
        assert early.status_code == 503 and early.json()["error"] == "unreachable", early.text
        assert run.endpoint in early.json()["message"]
        run.start()
        status = wait_until(
            lambda: (r := board.http.get("/api/status")).status_code == 200 and r.json(), timeout=120, interval=0.5
        )
        assert status["reachable"] is True


def sse_events(response, count: int, timeout: float) -> list[tuple[str, str | None, dict]]:
    """(event, id, data) of the next ``count`` events of an open event stream."""
    found: list[tuple[str, str | None, dict]] = []
    event, event_id, deadline = "message", None, time.monotonic() + timeout
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            found.append((event, event_id, json.loads(line[5:])))
            event, event_id = "message", None
        if len(found) >= count or time.monotonic() > deadline:
            break
    return found


def number(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def test_event_stream_resumes_without_loss_or_repeat_and_reports_gaps(runs):
    run = runs("stream", ENDLESS).start()
    with Dashboard(run) as board:
        run.wait_iteration(2, timeout=120)
        with board.http.stream("GET", "/api/events") as first:
            before = sse_events(first, 20, timeout=30)
        ids = [number(i) for _, i, _ in before]
        assert ids == list(range(ids[0], ids[0] + 20)), ids
        assert {d["topic"] for _, _, d in before} >= {"control.state"} and all(e == "bus" for e, _, _ in before)
        time.sleep(1.0)  # the connection is down; the run goes on
        last = before[-1][1]
        with board.http.stream("GET", "/api/events", headers={"Last-Event-ID": last}) as again:
            after = sse_events(again, 20, timeout=30)
        assert [e for e, _, _ in after] == ["bus"] * 20
        assert [number(i) for _, i, _ in after] == list(range(ids[-1] + 1, ids[-1] + 21))  # none lost, none twice
        assert all(d["id"] == i for _, i, d in after)

        stalled = socket.create_connection(("127.0.0.1", int(board.base.rsplit(":", 1)[1])))
        try:  # a reader that never reads: nobody else waits for it
            request = f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {board.token}\r\n\r\n"
            stalled.sendall(request.encode())
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            with board.http.stream("GET", "/api/events") as reader:
                assert len(sse_events(reader, 30, timeout=30)) == 30
            assert board.http.get("/api/dashboard").json()["readers"] >= 1
            assert board.http.get("/api/status").status_code == 200
        finally:
            stalled.close()

    small = Dashboard(run, "--event-buffer", "16", name="small")
    try:  # a reader away longer than the buffer lasts is told how many it lost, then goes on
        with small.http.stream("GET", "/api/events") as first:
            ((_, last, _),) = sse_events(first, 1, timeout=30)
        wait_until(lambda: small.http.get("/api/dashboard").json()["events"] > number(last) + 40, timeout=60)
        with small.http.stream("GET", "/api/events", headers={"Last-Event-ID": last}) as again:
            (gap, first_after) = sse_events(again, 2, timeout=30)
        assert gap[0] == "gap" and gap[1] is None, gap
        assert gap[2]["after"] == last and gap[2]["missed"] > 0 and gap[2]["on_bus"] is False
        assert number(first_after[1]) == number(last) + gap[2]["missed"] + 1 == number(gap[2]["next"])
        assert small.http.get("/api/dashboard").json()["dropped_by_readers"] >= gap[2]["missed"]
        with small.http.stream("GET", "/api/events", headers={"Last-Event-ID": "1-5"}) as foreign:
            (restart,) = sse_events(foreign, 1, timeout=30)
        assert restart[0] == "gap" and restart[2]["restarted"] is True  # an earlier dashboard's id
    finally:
        small.close()


def test_a_watched_run_ends_bitwise_where_an_unwatched_one_does(runs):
    """... and neither the dashboard nor CURVE changes the policy: the plain run has both off."""
    plain = runs("plain", [*SMALL, "security.curve=false"]).start()
    watched = runs("watched", SMALL).start()
    with Dashboard(watched) as board, contextlib.ExitStack() as viewers:
        streams = [viewers.enter_context(board.http.stream("GET", "/api/events")) for _ in range(10)]
        readers = lambda: board.http.get("/api/dashboard").json()["readers"]  # noqa: E731
        wait_until(lambda: readers() == 10, timeout=30, message=f"readers: {readers()}")
        watched.wait_iteration(20, timeout=120)
        assert board.http.post("/api/pause").status_code == 200
        assert board.http.post("/api/resume").status_code == 200
        for stream in streams:
            assert sse_events(stream, 5, timeout=30)
        assert board.http.get("/api/status").json()["state"] in {s.value for s in RunState}
        for run in (plain, watched):
            run.finish()
    (plain_dir,), (watched_dir,) = ((r.tmp / "runs").iterdir() for r in (plain, watched))
    assert final_hash(watched, watched_dir, 64) == final_hash(plain, plain_dir, 64)


def test_run_with_dashboard_starts_it_beside_the_run_and_stops_it_with_0(runs):
    run = runs("launched", SMALL)
    run.env.update(DYNAMICRL_DASHBOARD_PORT="0", DYNAMICRL_DASHBOARD_TOKEN_FILE=str(run.tmp / "token"))
    launched = run.launch("--dashboard")
    printed = wait_until(lambda: URL.search(launched.log()), timeout=120, message=f"no URL:\n{launched.log()}")
    with httpx.Client(base_url=printed.group(1), headers={"Authorization": f"Bearer {printed.group(2)}"}) as http:
        status = wait_until(lambda: (r := http.get("/api/status")).status_code == 200 and r.json(), timeout=120)
        assert status["run_id"] == run.run_dir.name
    assert launched.wait(timeout=180) == 0
    assert "dashboard.1 stopped (rc=0)" in launched.log(), launched.log()[-3000:]
