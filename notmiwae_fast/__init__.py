"""notmiwae_fast: MIWAE / not-MIWAE for data missing not at random, on fused C++ and
CUDA kernels registered as PyTorch operators.

* :func:`backend` says which implementation of the operators is active;
* :mod:`notmiwae_fast.ops` holds the operators (typed wrappers over
  ``torch.ops.notmiwae_fast.*``);
* :mod:`notmiwae_fast.reference` holds their pure-PyTorch twins.
"""

from . import ops, reference
from ._library import Backend, backend, library_path

__version__ = "0.1.0"

__all__ = ["Backend", "backend", "library_path", "ops", "reference", "__version__"]
