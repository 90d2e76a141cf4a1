"""`dynamicrl dashboard` beside a test run: started as a user starts it, stopped by pid."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx
from helpers import CLI, kill, user_env, wait_until

URL = re.compile(r"Dashboard: (http://\S+)/\?token=(\S+)")


class Dashboard:
    """The dashboard of ``run`` on a free port, its token in ``run.tmp``; ``http`` carries the token."""

    def __init__(self, run, *args: str, name: str = "dashboard") -> None:
        self.log_path = run.tmp / f"{name}.log"
        self.token_file = run.tmp / f"{name}.token"
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [*CLI, "dashboard", "--port", "0", "--token-file", str(self.token_file), *args],
                cwd=run.tmp,
                env=user_env(**run.shell_vars),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        found = wait_until(self._printed, timeout=60, message=f"the dashboard printed no URL:\n{self.log()}")
        self.base, self.token = found.group(1), found.group(2)
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=90)

    def _printed(self) -> re.Match | None:
        assert self.proc.poll() is None, f"the dashboard exited {self.proc.returncode}:\n{self.log()}"
        return URL.search(self.log())

    @property
    def url(self) -> str:
        """What a user opens: the printed URL with its token."""
        return f"{self.base}/?token={self.token}"

    def anonymous(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid)
                self.proc.wait(timeout=10)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
