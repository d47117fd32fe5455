"""How the Trainer runs data-parallel (under torchrun or in a process group you
started): the model wrapped in DistributedDataParallel with the torch seed offset by the
rank, and each epoch's rows split between the ranks by a DistributedSampler seeded alike
on every rank."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ..distributed.group import Context

__all__: list[str] = []


def _data_parallel(model: nn.Module, device: torch.device, ctx: Context) -> nn.Module:
    """What a training step calls: ``model`` itself, or in a distributed run ``model``
    in DistributedDataParallel, the torch seed then offset by the rank (the importance
    samples differ across ranks; :func:`_shard_sampler` takes the offset back)."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=ids)
    torch.manual_seed(torch.initial_seed() + ctx.rank)
    return wrapped


def _shard_sampler(
    ctx: Context, dataset: Any, shuffle: bool, drop_last: bool
) -> DistributedSampler:
    """This rank's share of ``dataset`` (anything with a length): a DistributedSampler
    seeded alike on every rank (the torch seed before :func:`_data_parallel`'s rank
    offset)."""
    return DistributedSampler(
        dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=shuffle,
        seed=torch.initial_seed() - ctx.rank,
        drop_last=drop_last,
    )


def _sharded(loader: Iterable, ctx: Context) -> Iterable:
    """In a distributed run, a DataLoader rebuilt with :func:`_shard_sampler` (its
    dataset, batch size, shuffle setting and worker, pinning and prefetch settings kept);
    anything else as it is."""
    if not ctx.distributed or not isinstance(loader, torch.utils.data.DataLoader):
        return loader
    if isinstance(loader.sampler, DistributedSampler):
        return loader
    shuffle = isinstance(loader.sampler, torch.utils.data.RandomSampler)
    return torch.utils.data.DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=_shard_sampler(ctx, loader.dataset, shuffle, drop_last=False),
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        pin_memory_device=loader.pin_memory_device,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )
