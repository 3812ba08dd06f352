"""Validation of the trainer's named tensors before a weight sync."""

from __future__ import annotations

import pytest
import torch

from rollout.weight_sync.prepare import read_model_layout, validate_named_tensors

SHAPES = {"model.embed_tokens.weight": (10, 4), "model.norm.weight": (4,)}


def test_layout_read_from_safetensors_headers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    shapes, tied = read_model_layout(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert tied is True
    assert shapes == want


def test_layout_of_a_folder_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text('{"tie_word_embeddings": false}')
    assert read_model_layout(str(tmp_path)) == (None, False)


def test_tied_output_layer_is_dropped_and_untied_one_kept():
    emb = torch.zeros(10, 4)
    sd = {"model.embed_tokens.weight": emb, "lm_head.weight": emb}
    assert [n for n, _ in validate_named_tensors(sd, tied_embeddings=True)] == ["model.embed_tokens.weight"]
    assert [n for n, _ in validate_named_tensors(sd, tied_embeddings=False)] == list(sd)


def test_unknown_name_and_wrong_shape_are_named():
    with pytest.raises(ValueError, match="'module.model.norm.weight'"):
        validate_named_tensors([("module.model.norm.weight", torch.zeros(4))], tied_embeddings=True,
                               expected_shapes=SHAPES)
    with pytest.raises(ValueError, match=r"'model.norm.weight' has shape \(5,\).*expects \(4,\)"):
        validate_named_tensors({"model.norm.weight": torch.zeros(5)}, tied_embeddings=True, expected_shapes=SHAPES)


def test_bad_items_duplicates_and_empty_input_are_rejected():
    with pytest.raises(TypeError, match="pairs or a dict"):
        validate_named_tensors([("model.norm.weight", [1.0, 2.0])], tied_embeddings=False)
    with pytest.raises(ValueError, match="given twice"):
        validate_named_tensors([("a", torch.zeros(1)), ("a", torch.zeros(1))], tied_embeddings=False)
    with pytest.raises(ValueError, match="no tensors"):
        validate_named_tensors({"lm_head.weight": torch.zeros(1)}, tied_embeddings=True)


def test_fused_projections_must_travel_together():
    layer = "model.layers.0.self_attn"
    qkv = {f"{layer}.{m}.weight": torch.zeros(2, 2) for m in ("q_proj", "k_proj", "v_proj")}
    assert len(validate_named_tensors(qkv, tied_embeddings=False)) == 3
    partial = {k: v for k, v in qkv.items() if "k_proj" not in k}
    with pytest.raises(ValueError, match=r"'model.layers.0.self_attn.k_proj.weight'.*all of them or none"):
        validate_named_tensors(partial, tied_embeddings=False)
    with pytest.raises(ValueError, match="up_proj"):
        validate_named_tensors({"model.layers.1.mlp.gate_proj.weight": torch.zeros(2)}, tied_embeddings=False)
    assert validate_named_tensors({"model.layers.1.mlp.down_proj.weight": torch.zeros(2)}, tied_embeddings=False)
