"""Start-up failures come back as one line naming the setting to change (real vLLM, in Ray)."""

from __future__ import annotations

import importlib.util

import pytest

from rollout import RolloutError, RolloutPool

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


def test_missing_model_path(ray_local, tmp_path):
    with pytest.raises(RolloutError, match=r"rollout worker 0 .* does not exist.*model\.name_or_path"):
        RolloutPool(str(tmp_path / "no-such-model"), start_timeout_s=300)


def test_too_large_memory_fraction(ray_local, smollm2_dir):
    # 99% of the node's RAM is never free: vLLM's CPU worker refuses, we name the setting
    with pytest.raises(RolloutError, match=r"lower rollout\.memory_fraction") as err:
        RolloutPool(smollm2_dir, memory_fraction=0.99, start_timeout_s=300)
    assert "\n" not in str(err.value)
    assert not ray_local.util.list_named_actors()  # nothing left behind
