"""The in-place safetensors bucket writer, read back with the safetensors library itself."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from rollout.weight_sync.safetensors_file import mapped_bucket_files, write_bucket_file


def _read(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _bucket(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [("int8", torch.arange(3, dtype=torch.int8)),  # odd size first: widths get reordered
            ("w", torch.randn(3, 5, generator=g)), ("ids", torch.arange(4)), ("empty", torch.zeros(0, 2)),
            ("strided", torch.randn(4, 6, generator=g)[:, ::2]), ("flag", torch.tensor([True, False, True]))]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_round_trip_through_the_safetensors_reader(tmp_path, dtype):
    path = str(tmp_path / "b.safetensors")
    write_bucket_file(path, _bucket(), dtype)
    got = _read(path)
    assert set(got) == {n for n, _ in _bucket()}
    for name, t in _bucket():
        want = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name


def test_same_layout_is_rewritten_in_place_new_layout_replaces_the_file(tmp_path):
    path = str(tmp_path / "b.safetensors")
    assert write_bucket_file(path, _bucket(0), torch.bfloat16) is False
    inode = os.stat(path).st_ino
    assert write_bucket_file(path, _bucket(1), torch.bfloat16) is True  # new values, same layout
    assert os.stat(path).st_ino == inode
    assert torch.equal(_read(path)["w"], _bucket(1)[1][1].to(torch.bfloat16))
    assert write_bucket_file(path, _bucket(1)[:2], torch.bfloat16) is False  # fewer tensors: new layout
    assert set(_read(path)) == {"int8", "w"}


def test_a_dtype_safetensors_cannot_hold_is_named(tmp_path):
    with pytest.raises(TypeError, match="'z'"):
        write_bucket_file(str(tmp_path / "c.safetensors"), [("z", torch.zeros(2, dtype=torch.complex64))])


def test_mapped_reader_matches_the_safetensors_library_and_views_outlive_the_block(tmp_path):
    paths = [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    write_bucket_file(paths[0], _bucket(), torch.bfloat16)
    write_bucket_file(paths[1], [("only_empty", torch.zeros(0, 3))])
    with mapped_bucket_files(paths) as named:
        got = dict(named)
    want = {**_read(paths[0]), **_read(paths[1])}
    assert set(got) == set(want)
    for name, t in want.items():  # read after the block: the mappings must still be there
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
