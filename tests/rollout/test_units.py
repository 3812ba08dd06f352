"""Pure helpers of the pool and the vLLM adapter: splitting, checks, error explanations, process env."""

from __future__ import annotations

import pytest

from rollout.errors import RolloutError
from rollout.pool import RolloutPool, check_sampling, split_evenly
from rollout.types import EngineSpec, SamplingSpec
from rollout.vllm_adapter import check_model_path, engine_process_env, explain_startup_error


@pytest.mark.parametrize("count, parts, want", [
    (10, 3, [(0, 4), (4, 7), (7, 10)]),
    (2, 4, [(0, 1), (1, 2)]),  # fewer prompts than workers: no empty chunks
    (6, 2, [(0, 3), (3, 6)]),
    (0, 2, []),
])
def test_split_evenly(count, parts, want):
    assert split_evenly(count, parts) == want


@pytest.mark.parametrize("change, key", [
    (dict(n=0), "rollout.n"), (dict(temperature=-1.0), "rollout.temperature"), (dict(top_p=0.0), "rollout.top_p"),
    (dict(top_k=0), "rollout.top_k"), (dict(max_tokens=0), "rollout.max_tokens"), (dict(stop=[""]), "rollout.stop"),
])
def test_bad_sampling_names_the_key(change, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_sampling(SamplingSpec(**change))
    check_sampling(SamplingSpec(temperature=0.0, top_k=5, top_p=0.9, stop=["\n"]))  # fine


def test_pool_refuses_an_engine_it_does_not_have_before_starting_anything():
    # A recipe's rollout.* / model.dtype values are checked against the schema before the pool exists
    # (tests/rl/test_config_fields.py); the pool itself only refuses what its dispatch cannot run.
    with pytest.raises(RolloutError, match=r"rollout\.backend='sglang' is not one of vllm, hf"):
        RolloutPool("/nonexistent", backend="sglang")


SPEC = EngineSpec(model_path="/m", memory_fraction=0.9, max_model_len=4096)


@pytest.mark.parametrize("message, expected", [
    # the vLLM 0.32 messages these explanations key on (vllm/v1/worker/cpu_worker.py, kv_cache_utils.py)
    ("Available memory on node 0 (20.1/23.5 GiB) on startup is less than desired CPU memory utilization "
     "(0.9, 21.2 GiB).", "lower rollout.memory_fraction"),
    ("Available memory on node 0 (20/23 GiB) on kv cache allocation is less than requested memory for kv "
     "(-0.1/0.2 GiB). Reduce CPU memory used by other processes.", "raise rollout.memory_fraction"),
    ("To serve at least one request with the models's max seq len (4096), (1.5 GiB KV cache is needed, which "
     "is larger than the available KV cache memory (0.2 GiB).", "lower rollout.max_model_len"),
    ("User-specified max_model_len (4096) is greater than the derived max_model_len (2048)",
     "lower rollout.max_model_len"),
])
def test_startup_errors_are_explained_with_the_setting(message, expected):
    line = explain_startup_error(ValueError(message), SPEC)
    assert expected in line and "\n" not in line


def test_unrelated_errors_are_not_explained():
    assert explain_startup_error(RuntimeError("something else"), SPEC) is None


def test_model_path_checks(tmp_path):
    assert "does not exist" in check_model_path(str(tmp_path / "missing"))
    assert "config.json" in check_model_path(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert check_model_path(str(tmp_path)) is None
    assert check_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub id: vLLM resolves it


def test_process_env():
    cpu = engine_process_env(on_gpu=False, cpu_threads=3, preload=False)
    assert cpu["OMP_NUM_THREADS"] == "3" and cpu["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "OMP_NUM_THREADS" not in engine_process_env(on_gpu=True, cpu_threads=3, preload=False)


def test_pool_refuses_a_sync_backend_it_cannot_use_before_starting_engines(ray_local):
    from rollout.errors import RolloutError

    with pytest.raises(RolloutError, match="sync_backend=nccl needs rollout.backend=vllm"):
        RolloutPool("/nonexistent", backend="hf", sync_backend="nccl")
    with pytest.raises(RolloutError, match="sync_backend='gloo'"):
        RolloutPool("/nonexistent", sync_backend="gloo")


def test_a_gpu_sync_backend_on_a_cpu_machine_fails_before_engines_start(ray_local, tiny_model_dir):
    import torch

    from rollout.errors import RolloutError

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on machines without CUDA")
    with pytest.raises(RolloutError, match="sync_backend=cuda_ipc needs CUDA"):
        RolloutPool(tiny_model_dir, sync_backend="cuda_ipc", start_timeout_s=60)
