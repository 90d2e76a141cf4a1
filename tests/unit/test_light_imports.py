"""What a command imports: `dynamicrl status` stays fast (bench/status_latency.py measures it).

The CLI, the controller and the logger never import torch. `dynamicrl status` imports neither
numpy nor any other command's module: the group loads a command's module when it runs, the
messages load numpy with the first array.
"""

import json
import subprocess
import sys

import pytest
from helpers import start_controller

from dynamicrl.clients.cli import COMMANDS

#: Modules `dynamicrl status` must not import: heavy, or another command's.
NOT_FOR_STATUS = [
    "torch",
    "numpy",
    "dynamicrl.clients.cli.checkpoint_cmd",
    "dynamicrl.clients.cli.protocol_cmd",
    "dynamicrl.clients.cli.provider",
    "dynamicrl.clients.cli.run_cmd",
    "dynamicrl.clients.cli.watch",
]


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``code`` (which may end by SystemExit)."""
    script = f"import json, sys\ntry:\n    {code}\nfinally:\n    print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip(), out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "dynamicrl.clients.cli",
        "dynamicrl.services.controller.app",
        "dynamicrl.services.logger.app",
    ],
)
def test_module_does_not_import_torch(module):
    assert "torch" not in imported_by(f"import {module}")


def test_the_cli_group_the_client_and_the_codec_import_no_numpy_and_no_command():
    loaded = imported_by("import dynamicrl.clients.cli, dynamicrl.clients.control, dynamicrl.protocol.codec")
    assert not loaded & set(NOT_FOR_STATUS), sorted(loaded & set(NOT_FOR_STATUS))
    assert "dynamicrl.clients.cli.control_cmd" not in loaded


def test_status_against_a_live_controller_imports_only_what_it_needs(tmp_path):
    with start_controller(tmp_path, overrides=["timing.start_timeout_s=600"]) as controller:
        code = (
            "from dynamicrl.clients.cli import main\n"
            f"    main(['status', 'addresses.controller={controller.controller}'])"
        )
        loaded = imported_by(code)
    assert "dynamicrl.clients.cli.control_cmd" in loaded and "dynamicrl.clients.control" in loaded  # it did run
    assert not loaded & set(NOT_FOR_STATUS), sorted(loaded & set(NOT_FOR_STATUS))


def test_every_command_in_the_table_loads_under_its_name():
    import click

    from dynamicrl.clients.cli import main

    ctx = click.Context(main)
    assert [main.get_command(ctx, name).name for name in COMMANDS] == list(COMMANDS)


def test_array_dtypes_written_without_numpy_are_numpys():
    import numpy as np

    from dynamicrl.protocol.messages import ARRAY_DTYPES

    names = [
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    ]
    assert {np.dtype(name).str for name in names} == ARRAY_DTYPES
