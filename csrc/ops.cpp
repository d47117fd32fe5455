// The operator schemas of notmiwae_fast: the one place that says which ops exist.
//
// Where each op lives (one file per op family and backend):
//   csrc/cpu/<family>_cpu.cpp   CPU kernels (forward and backward)   TORCH_LIBRARY_IMPL(.., CPU)
//   csrc/cuda/<family>_cuda.cu  CUDA kernels (forward and backward)  TORCH_LIBRARY_IMPL(.., CUDA)
//   csrc/autograd/<family>_autograd.cpp  C++ autograd                 TORCH_LIBRARY_IMPL(.., Autograd)
//   csrc/include/notmiwae_fast/math.h    the per-element math, shared by CPU and CUDA
//   notmiwae_fast/ops.py        typed Python wrappers and fake (meta) kernels
//   notmiwae_fast/reference.py  the pure-PyTorch twin of every op
// The semantics are those of ../shared/SPEC.md section 2 (see also reference.py).
#include <torch/library.h>

TORCH_LIBRARY(notmiwae_fast, m) {
  // --- importance weighting (family "iw") ---------------------------------------
  // log( (1/K) Σ_k exp(log_w[b, k]) ): [B, K] -> [B]; a row of -inf only gives -inf.
  m.def("iw_logmeanexp(Tensor log_w) -> Tensor");
  m.def("iw_logmeanexp_backward(Tensor grad, Tensor log_w) -> Tensor");
  // softmax over K (self-normalised importance weights): [B, K] -> [B, K].
  m.def("iw_weights(Tensor log_w) -> Tensor");
  m.def("iw_weights_backward(Tensor grad, Tensor weights) -> Tensor");
  // Σ_k softmax(log_w)[b, k] · values[b, k, d]: ([B, K], [B, K, D]) -> [B, D],
  // streaming over K in constant working memory.
  m.def("iw_impute(Tensor log_w, Tensor values) -> Tensor");
  m.def(
      "iw_impute_backward(Tensor grad, Tensor log_w, Tensor values, Tensor result) "
      "-> (Tensor, Tensor)");
}
