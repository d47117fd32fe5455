"""Deployment: a trained MIWAE / NotMIWAE as a TorchScript or ONNX imputer.

The exported function is (x with anything at the missing entries, mask) -> imputed x,
for any batch size, with ``n_samples`` importance samples fixed at export:

    x_imputed = Σ_k softmax(log w)_k E[x | z_k]  at the missing entries, x elsewhere.

``deterministic=True`` makes the noise explicit inputs, ``eps_z`` [B, K, L] (standard
normal) and, for not-MIWAE, ``eps_x`` [B, K, D] (standard normal; standard Student-t
for ``student_t``), so an exported model can be compared exactly with eager PyTorch.

* :func:`to_torchscript` with ``fused=True`` (default) calls the ``torch.ops.notmiwae_fast``
  kernels; load it with ``torch.ops.load_library(notmiwae_fast.library_path())`` then
  ``torch.jit.load``, in Python or C++ (``examples/cpp_impute``). ``fused=False`` writes
  the pure-PyTorch variant, which loads with torch alone.
* :func:`to_onnx` exports the pure-PyTorch math (standard ONNX ops, opset 17+).
"""

from .formats import to_onnx, to_torchscript
from .model_files import MODEL_FORMAT, load_model, model_from_state, save_model
from .module import ExportableImputer

__all__ = [
    "ExportableImputer",
    "to_torchscript",
    "to_onnx",
    "save_model",
    "load_model",
    "model_from_state",
    "MODEL_FORMAT",
]
