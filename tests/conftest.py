"""Shared fixtures: a tiny random Llama with the SmolLM2 tokenizer, a local Ray instance."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.models import resolve_model, tiny_llama_config

    out = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(hidden=128, layers=2, heads=2))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve_model("smollm2-135m")).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        from rollout.local_ray import init_local_ray

        init_local_ray(3, log_to_driver=False)
    yield
    ray.shutdown()
