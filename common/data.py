"""Resumable, rank-aware batch sampling: batch k is a pure function of (seed, k), so resume needs no state."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class ResumableBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Endless batches of dataset indices for one rank.

    Each epoch is a permutation drawn from a generator seeded with (seed, epoch); a global batch of
    `batch_size * world_size` consecutive indices is split between ranks, so together the ranks see each
    sample once per epoch. Starting at `start_step` reproduces exactly the batches an uninterrupted run
    would have drawn. The last partial global batch of an epoch is dropped (needs len >= global batch).
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ):
        global_batch = batch_size * world_size
        if dataset_len < global_batch:
            raise ValueError(
                f"dataset has {dataset_len} samples, fewer than one global batch "
                f"({batch_size} x {world_size} ranks = {global_batch}); lower batch_size"
            )
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step, self.shuffle = start_step, shuffle
        self.steps_per_epoch = dataset_len // global_batch

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.dataset_len)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.dataset_len, generator=gen)

    def batch(self, step: int) -> list[int]:
        """This rank's indices for global step `step`."""
        epoch, within = divmod(step, self.steps_per_epoch)
        return self._rank_slice(self._epoch_order(epoch), within)

    def _rank_slice(self, order: torch.Tensor, within: int) -> list[int]:
        start = (within * self.world_size + self.rank) * self.batch_size
        return order[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, order = self.start_step, -1, torch.empty(0)
        while True:
            e, within = divmod(step, self.steps_per_epoch)
            if e != epoch:  # one permutation per epoch, not per batch
                epoch, order = e, self._epoch_order(e)
            yield self._rank_slice(order, within)
            step += 1

    def __len__(self) -> int:
        return self.steps_per_epoch
