"""Shared fixtures for the rollout tests: one local Ray instance and small model directories."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for all rollout tests (starting Ray costs ~4 s)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        from rollout.local_ray import init_local_ray

        init_local_ray(2, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The bundled SmolLM2-135M-Instruct (prepared once from its GGUF if needed)."""
    from rl.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A tiny random Llama with SmolLM2's real tokenizer (engines need one), saved as fp32 safetensors."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rl.models import tiny_llama_config

    out = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config()).to(torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return str(out)
