"""The operator layer: typed wrappers over the ``torch.ops.notmiwae_fast`` operators.

Each function here has the name and semantics of its twin in :mod:`.reference` and
calls the compiled kernel of the inputs' device when there is one (see
:func:`notmiwae_fast.backend`). Without one (reference backend, or a device the library
has no kernels for) it runs the reference implementation: the same results, slower and
with more memory; a device without kernels is reported once with a warning.

One module per operator family, named as its kernels are (``csrc/cpu/<family>_cpu.cpp``,
``csrc/cuda/<family>_cuda.cu``), each holding the family's wrappers and fake (meta)
kernels (for ``torch.compile`` / ``torch.export`` / opcheck); ``reference/<family>.py``
holds the pure-PyTorch twins; ``_checks`` the argument checks the reference path runs;
``_library`` finds and loads the compiled library. This layer imports nothing else of
the package.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from . import _library, bound, clipped, data, iw, latent, likelihood, mlp, reference
from .bound import gauss_bound, gauss_bound_grads
from .clipped import clipped_impute
from .data import observed_data
from .iw import iw_impute, iw_logmeanexp, iw_weights
from .latent import latent_terms
from .likelihood import (
    masked_bernoulli_logprob,
    masked_categorical_logprob,
    masked_normal_logprob,
    masked_poisson_logprob,
    masked_studentt_logprob,
    notmiwae_normal_terms,
    selfmask_logprob,
)
from .mlp import mlp_tanh, softplus_scale

_FAMILIES = (data, iw, likelihood, mlp, latent, bound, clipped)

# One wrapper per operator, named as the operator: the families' names, in order.
__all__ = [name for family in _FAMILIES for name in family.__all__]


def _register_fakes() -> None:
    def fake(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return torch.library.register_fake(f"{_library.NAMESPACE}::{name}")

    for family in _FAMILIES:
        family.register_fakes(fake)


if _library.backend().library is not None:
    _missing = [name for name in __all__ if not hasattr(torch.ops.notmiwae_fast, name)]
    if _missing:
        raise ImportError(
            f"notmiwae_fast: the library {_library.backend().library} is older "
            f"than this Python package (it lacks {', '.join(_missing)}); rebuild "
            "it: pip install --no-build-isolation -e ."
        )
    _register_fakes()
