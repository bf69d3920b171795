"""The DROID adapter fails clearly when DROID is not installed (no robot here to test more)."""

import importlib.util

import pytest

from evaluator_client.droid import DroidRobot, DroidUnavailableError


@pytest.mark.skipif(importlib.util.find_spec("droid") is not None, reason="DROID is installed here")
def test_missing_droid_explains_how_to_install():
    with pytest.raises(DroidUnavailableError) as info:
        DroidRobot()
    message = str(info.value)
    assert "github.com/droid-dataset/droid" in message and "pip install -e ." in message
    assert isinstance(info.value, ImportError)
