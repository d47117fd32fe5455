// The operator schemas of notmiwae_fast: the one place that says which ops exist.
//
// Where each op lives (one file per op family and backend):
//   csrc/cpu/<family>_cpu.cpp              CPU kernels (forward and backward), key CPU
//   csrc/cuda/<family>_cuda.cu             CUDA kernels (forward and backward), key CUDA
//   csrc/autograd/<family>_autograd.cpp    C++ autograd, key Autograd
//   csrc/composite/<family>_composite.cpp  ops composed of other ops (any device)
//     (data_composite.cpp: observed_data on devices without a kernel of their own)
//   csrc/autocast.cpp                      torch.autocast, every op (one policy table)
//   csrc/include/notmiwae_fast/math.h      the per-element math, shared by CPU and CUDA
//   csrc/include/notmiwae_fast/<family>.h  what a family's CPU and CUDA kernels share
//     (likelihood.h: the per-element terms; likelihood_ops.h: the ops, for both backends)
//   csrc/autograd/op_function.h            an op whose derivative is <op>_backward
//   notmiwae_fast/ops.py                   typed Python wrappers and fake (meta) kernels
//   notmiwae_fast/reference.py             the pure-PyTorch twin of every op
// The semantics are those of ../shared/SPEC.md section 2 (see also reference.py).
#include <torch/library.h>

namespace {

// The models' input (family "data").
void define_data_ops(torch::Library& m) {
  // x floating, s its mask (bool, integer or floating; nonzero = observed), same shape.
  // Returns (x with 0 where s = 0, s as 0/1 of x's dtype, counts int64 [2]: entries of s
  // other than 0 and 1 (NaN included), observed entries of x that are NaN or ±inf), in
  // one pass: the caller raises on nonzero counts.
  m.def("observed_data(Tensor x, Tensor s) -> (Tensor, Tensor, Tensor)");
}

// Importance weighting (family "iw").
void define_iw_ops(torch::Library& m) {
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

// Likelihoods and the missing process (family "likelihood").
void define_likelihood_ops(torch::Library& m) {
  // Shapes: x, mask [B, D] (mask bool or float, nonzero = observed); per-sample
  // tensors [B, K, D]; per-feature W, b, df [D]; results [B, K]. Entries under
  // mask = 0 contribute exactly 0 to values and gradients. The backward ops return the
  // gradients of the parameters only (x and mask are data; eps is noise).
  // Σ_d mask · log N(x; loc, scale)
  m.def("masked_normal_logprob(Tensor x, Tensor mask, Tensor loc, Tensor scale) -> Tensor");
  m.def(
      "masked_normal_logprob_backward(Tensor grad, Tensor x, Tensor mask, Tensor loc, "
      "Tensor scale) -> (Tensor, Tensor)");
  // Σ_d mask · (x log σ(l) + (1 − x) log σ(−l))
  m.def("masked_bernoulli_logprob(Tensor x, Tensor mask, Tensor logits) -> Tensor");
  m.def(
      "masked_bernoulli_logprob_backward(Tensor grad, Tensor x, Tensor mask, Tensor logits) "
      "-> Tensor");
  // Σ_d mask · (x log λ − λ − lgamma(x + 1)), λ = exp(log_rate): counts x ≥ 0
  m.def("masked_poisson_logprob(Tensor x, Tensor mask, Tensor log_rate) -> Tensor");
  m.def(
      "masked_poisson_logprob_backward(Tensor grad, Tensor x, Tensor mask, Tensor log_rate) "
      "-> Tensor");
  // Σ_g mask[b, g] · log_softmax(logits[b, k, offsets[g]:offsets[g + 1]])[x[b, g]]: x, mask
  // [B, G] (x: each column's category code, a floating value); logits [B, K, T]; offsets:
  // G + 1 strictly increasing column starts, 0 to T. An observed code that is not an
  // integer in [0, n_g) contributes −inf (and no gradient).
  m.def(
      "masked_categorical_logprob(Tensor x, Tensor mask, Tensor logits, int[] offsets) "
      "-> Tensor");
  m.def(
      "masked_categorical_logprob_backward(Tensor grad, Tensor x, Tensor mask, Tensor logits, "
      "int[] offsets) -> Tensor");
  // Σ_d mask · log StudentT(x; df[d], loc, scale)
  m.def(
      "masked_studentt_logprob(Tensor x, Tensor mask, Tensor loc, Tensor scale, Tensor df) "
      "-> Tensor");
  m.def(
      "masked_studentt_logprob_backward(Tensor grad, Tensor x, Tensor mask, Tensor loc, "
      "Tensor scale, Tensor df) -> (Tensor, Tensor, Tensor)");
  // Σ_d log Bernoulli(mask; σ(−W (x_full − b))), every feature
  m.def("selfmask_logprob(Tensor x_full, Tensor mask, Tensor W, Tensor b) -> Tensor");
  m.def(
      "selfmask_logprob_backward(Tensor grad, Tensor x_full, Tensor mask, Tensor W, Tensor b) "
      "-> (Tensor, Tensor, Tensor)");
  // (masked_normal_logprob(x, mask, loc, scale), selfmask_logprob(x̂, mask, W, b)) with
  // x̂ = mask·x + (1 − mask)·(loc + scale·eps), in one pass; x̂ is never stored.
  m.def(
      "notmiwae_normal_terms(Tensor x, Tensor mask, Tensor loc, Tensor scale, Tensor eps, "
      "Tensor W, Tensor b) -> (Tensor, Tensor)");
  m.def(
      "notmiwae_normal_terms_backward(Tensor grad_obs, Tensor grad_miss, Tensor x, Tensor mask, "
      "Tensor loc, Tensor scale, Tensor eps, Tensor W, Tensor b) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

// The latent samples (family "latent").
void define_latent_ops(torch::Library& m) {
  // z = mu + std · eps and the two log-densities of z, summed over L:
  // log p(z) = Σ_l log N(z; 0, 1), log q(z | x) = Σ_l log N(z; mu, std) (= Σ_l log N(eps;
  // 0, 1) − log std). mu, std [B, L] (std > 0); eps [B, K, L] -> ([B, K, L], [B, K], [B, K]).
  m.def("latent_terms(Tensor mu, Tensor std, Tensor eps) -> (Tensor, Tensor, Tensor)");
  // (grad_mu, grad_std); undefined incoming gradients count as zeros.
  m.def(
      "latent_terms_backward(Tensor? grad_z, Tensor? grad_log_p, Tensor? grad_log_q, "
      "Tensor mu, Tensor std, Tensor eps) -> (Tensor, Tensor)");
}

// The networks' MLPs and activations (family "mlp").
void define_mlp_ops(torch::Library& m) {
  // y = L_n(tanh(L_{n−1}(… tanh(L_1(x))))), L_i(h) = h W_iᵀ + b_i: x [N, in],
  // weights[i] [out_i, in_i] (nn.Linear's layout), biases[i] [out_i] -> [N, out_n].
  m.def("mlp_tanh(Tensor x, Tensor[] weights, Tensor[] biases) -> Tensor");
  // The same, also returning the n − 1 hidden activations (after tanh) for the backward.
  m.def("mlp_tanh_forward(Tensor x, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor[])");
  // (grad_x, grad_weights, grad_biases) of Σ grad · y.
  m.def(
      "mlp_tanh_backward(Tensor grad, Tensor x, Tensor[] weights, Tensor[] hidden) "
      "-> (Tensor, Tensor[], Tensor[])");
  // The decoders' positive scale: softplus(raw) + min_scale, element-wise (any shape).
  m.def("softplus_scale(Tensor raw, float min_scale) -> Tensor");
  // grad · σ(raw)
  m.def("softplus_scale_backward(Tensor grad, Tensor raw) -> Tensor");
}

// The whole bound of a Gaussian-decoder model (family "bound").
void define_bound_ops(torch::Library& m) {
  // encoder MLP(x) = [μ, log σ²] -> latent_terms -> decoder MLP(z) = [loc, raw] ->
  // softplus_scale -> masked_normal_logprob, or notmiwae_normal_terms with W, b ->
  // iw_logmeanexp, composed in C++ (csrc/composite/bound_composite.cpp). x, mask [B, D];
  // eps_z [B, K, L]; eps_x [B, K, D] (with W, b); W, b [D] or none (MIWAE). Returns
  // (bound [B], log_w, log p(x°|z), log p(s|x̂), log p(z), log q(z|x)), each [B, K].
  m.def(
      "gauss_bound(Tensor x, Tensor mask, Tensor eps_z, Tensor? eps_x, Tensor[] enc_weights, "
      "Tensor[] enc_biases, Tensor[] dec_weights, Tensor[] dec_biases, Tensor? W, Tensor? b, "
      "float min_scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The same six results and the gradients of the models' loss −mean(bound) with respect
  // to enc_weights, enc_biases, dec_weights, dec_biases (each list in order), then W and
  // b when given: a training step's forward and backward in one call, no autograd graph.
  m.def(
      "gauss_bound_grads(Tensor x, Tensor mask, Tensor eps_z, Tensor? eps_x, "
      "Tensor[] enc_weights, Tensor[] enc_biases, Tensor[] dec_weights, Tensor[] dec_biases, "
      "Tensor? W, Tensor? b, float min_scale) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor[])");
}

// Clipped pixels (family "clipped").
void define_clipped_ops(torch::Library& m) {
  // The imputation of the clipped-pixel model in one streaming pass over K shared draws
  // (csrc/include/notmiwae_fast/clipped.h): x, lost [N, C]; context [N, H] (the decoder's
  // context part, W_h h + b); mu, std [N, L] (the encoder's q(z)); eps [K, L]; w_latent
  // [H, L]; w_out [2C, H]; b_out [2C]; clip, min_scale; censored: the clipping process
  // in the weights and the imputation (not-MIWAE) or not (MIWAE). Returns [N, C]: x with
  // its lost values imputed. Inference only: no gradient.
  m.def(
      "clipped_impute(Tensor x, Tensor lost, Tensor context, Tensor mu, Tensor std, "
      "Tensor eps, Tensor w_latent, Tensor w_out, Tensor b_out, float clip, float min_scale, "
      "bool censored) -> Tensor");
}

}  // namespace

TORCH_LIBRARY(notmiwae_fast, m) {
  define_data_ops(m);
  define_iw_ops(m);
  define_likelihood_ops(m);
  define_latent_ops(m);
  define_mlp_ops(m);
  define_bound_ops(m);
  define_clipped_ops(m);
}
