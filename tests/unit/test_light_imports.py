"""The CLI, the controller and the logger must not import torch: `dynamicrl status` stays fast."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "dynamicrl.clients.cli",
        "dynamicrl.services.controller.app",
        "dynamicrl.services.logger.app",
    ],
)
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
