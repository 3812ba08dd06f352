"""Resumable prompt batching: an endless stream of row-index batches.

Epoch ``e`` visits every row once, in an order that depends only on ``(seed, e)``
(identity order when ``shuffle`` is False). Batches are cut from the concatenation
of the epochs, so when ``num_rows`` is not a multiple of ``batch_size`` the last
batch of an epoch is completed with the first rows of the next epoch: no row is
dropped and each epoch is still a permutation, but that one batch may hold a row
twice (once from each epoch). With ``batch_size > num_rows`` every batch spans
several epochs.

The state is just ``(epoch, position)``; ``load_state_dict`` of a saved state makes
the next batch exactly the one the saved run would have drawn next.
"""

from __future__ import annotations

import random


class PromptSampler:
    def __init__(self, num_rows: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        if num_rows < 1:
            raise ValueError(f"PromptSampler: no prompts to sample (num_rows={num_rows}); "
                             "check data.source and data.max_prompt_tokens")
        if batch_size < 1:
            raise ValueError(f"PromptSampler: batch_size={batch_size} must be >= 1 (trainer.prompts_per_step)")
        self.num_rows, self.batch_size, self.seed, self.shuffle = num_rows, batch_size, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self.epoch_order(0)

    def epoch_order(self, epoch: int) -> list[int]:
        """The permutation of row indices visited in ``epoch``."""
        order = list(range(self.num_rows))
        if self.shuffle:
            # A string seed is hashed with SHA-512 (stable across Python versions), and only
            # random() is drawn, whose stream is stable too: a resumed run on another Python gets
            # the same order. The string also keeps (seed=1, epoch=0) apart from (seed=0, epoch=1).
            rng = random.Random(f"tokencredit-sampler:{self.seed}:{epoch}")
            for i in range(self.num_rows - 1, 0, -1):
                j = min(int(rng.random() * (i + 1)), i)
                order[i], order[j] = order[j], order[i]
        return order

    def next_batch(self) -> list[int]:
        batch: list[int] = []
        while len(batch) < self.batch_size:
            take = min(self.batch_size - len(batch), self.num_rows - self.position)
            batch += self._order[self.position:self.position + take]
            self.position += take
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self.epoch_order(self.epoch)
        return batch

    def __iter__(self) -> PromptSampler:
        return self

    def __next__(self) -> list[int]:
        return self.next_batch()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "num_rows": self.num_rows,
                "batch_size": self.batch_size, "seed": self.seed, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; the prompt set and seed must be the ones it was saved with."""
        for key in ("num_rows", "seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"PromptSampler.load_state_dict: the checkpoint was saved with {key}={state[key]!r} "
                                 f"but this run has {key}={getattr(self, key)!r} (changed data or trainer.seed?)")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.num_rows:
            raise ValueError(f"PromptSampler.load_state_dict: bad state epoch={epoch} position={position} "
                             f"for num_rows={self.num_rows}")
        self.epoch, self.position = epoch, position
        self._order = self.epoch_order(epoch)
