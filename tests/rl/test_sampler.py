import json

import pytest

from rl.sampler import PromptSampler


def take(sampler: PromptSampler, k: int) -> list[list[int]]:
    return [next(sampler) for _ in range(k)]


def test_unshuffled_stream_wraps_partial_batches_into_the_next_epoch():
    s = PromptSampler(num_rows=5, batch_size=3, seed=0, shuffle=False)
    assert take(s, 4) == [[0, 1, 2], [3, 4, 0], [1, 2, 3], [4, 0, 1]]
    assert (s.epoch, s.position) == (2, 2)


def test_each_epoch_is_a_permutation_and_epochs_differ():
    s = PromptSampler(num_rows=12, batch_size=4, seed=3)
    epochs = [sum(take(s, 3), []) for _ in range(4)]
    for e in epochs:
        assert sorted(e) == list(range(12))
    assert len({tuple(e) for e in epochs}) == 4  # reshuffled every epoch
    assert epochs[0] != list(range(12))


def test_wrapping_batch_takes_the_next_epochs_first_rows():
    s = PromptSampler(num_rows=5, batch_size=2, seed=7)
    stream = sum(take(s, 5), [])
    assert stream[:5] == s.epoch_order(0) and stream[5:] == s.epoch_order(1)
    assert sorted(stream[:5]) == sorted(stream[5:]) == list(range(5))


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = (PromptSampler(20, 6, seed) for seed in (1, 1, 2))
    first = take(a, 5)
    assert first == take(b, 5)
    assert first != take(c, 5)


def test_seed_and_epoch_do_not_alias():
    # seed + epoch arithmetic would make (seed=1, epoch=0) == (seed=0, epoch=1)
    assert PromptSampler(30, 1, seed=1).epoch_order(0) != PromptSampler(30, 1, seed=0).epoch_order(1)


def test_order_is_pinned_across_versions():
    # Resuming on another Python/numpy must not change the order: this pins seed 0's first epoch.
    assert PromptSampler(8, 8, seed=0).epoch_order(0) == PINNED_SEED0_N8


PINNED_SEED0_N8 = [5, 1, 3, 7, 6, 4, 2, 0]  # recorded from this implementation (a regression pin)


@pytest.mark.parametrize("saved_after", [0, 1, 3, 4, 7])
def test_resume_draws_exactly_the_same_next_batches(saved_after):
    ref = PromptSampler(num_rows=7, batch_size=3, seed=11)
    take(ref, saved_after)
    state = json.loads(json.dumps(ref.state_dict()))  # survives a JSON checkpoint
    expected = take(ref, 6)
    resumed = PromptSampler(num_rows=7, batch_size=3, seed=11)
    resumed.load_state_dict(state)
    assert take(resumed, 6) == expected


def test_resume_with_other_data_or_seed_is_an_error():
    state = PromptSampler(10, 2, seed=1).state_dict()
    with pytest.raises(ValueError, match="num_rows=10"):
        PromptSampler(11, 2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=1"):
        PromptSampler(10, 2, seed=2).load_state_dict(state)


def test_batch_larger_than_dataset_spans_epochs():
    s = PromptSampler(num_rows=2, batch_size=5, seed=0, shuffle=False)
    assert next(s) == [0, 1, 0, 1, 0]
    assert s.state_dict()["epoch"] == 2


def test_empty_dataset_and_bad_batch_size_are_errors():
    with pytest.raises(ValueError, match="no prompts"):
        PromptSampler(0, 4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        PromptSampler(4, 0, seed=0)
