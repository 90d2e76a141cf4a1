"""A patch's values keep their type: true is not 1.0 (pydantic's lax mode would take it as one)."""

import pytest

from dynamicrl.core import tunables
from dynamicrl.core.settings import load_config


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_for_a_number_is_refused_by_name(value):
    config = load_config()
    with pytest.raises(tunables.PatchError) as refused:
        tunables.validate(config, {"ppo.lr": value})
    assert refused.value.problems == {"ppo.lr": f"ppo.lr={value!r}: expected float, not true/false"}


def test_numbers_still_patch():
    config = load_config()
    patched, diff = tunables.validate(config, {"ppo.lr": 0.001, "ppo.update_epochs": 3})
    assert patched.algo.lr == 0.001
    assert diff["ppo.lr"][1] == 0.001 and diff["ppo.update_epochs"][1] == 3
