"""Running on several processes and machines with torch.distributed.

Launch any script that uses :class:`notmiwae_fast.Trainer` with ``torchrun``; the process
group is started from torchrun's environment (gloo on CPU, NCCL on GPU) and the Trainer
wraps the model in DistributedDataParallel, shards the data with a DistributedSampler,
averages the metrics over ranks, writes checkpoints from rank 0 only and offsets the
seeds by rank. :func:`impute_sharded` splits an imputation over the ranks and assembles
the result in the original row order; :func:`transform_sharded` does the same for a
fitted scikit-learn style imputer and :func:`impute_image_folder` for a folder of images.
The ``notmiwae-fast`` command's ``fit``, ``impute`` and ``impute-image`` run on these.

The primitives live in :mod:`.group` (it imports nothing else of the package); each
application lives beside what it distributes (``impute/sharded.py``,
``images/folder.py``) and is re-exported here on first use, so that importing the
primitives never imports the models.
"""

from __future__ import annotations

import importlib

from . import group
from .group import *  # noqa: F403  (the primitives: group.__all__)

_APPLICATIONS = {
    "impute_sharded": "..impute.sharded",
    "transform_sharded": "..impute.sharded",
    "impute_image_folder": "..images.folder",
    "list_images": "..images.folder",
    "MANIFEST_NAME": "..images.folder",
}

__all__ = [*group.__all__, *_APPLICATIONS]


def __getattr__(name: str):
    if name in _APPLICATIONS:
        return getattr(importlib.import_module(_APPLICATIONS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
