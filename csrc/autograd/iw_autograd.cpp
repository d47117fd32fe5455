// C++ autograd of the importance-weighting family (see op_function.h).
#include <torch/library.h>

#include <tuple>

#include "op_function.h"

namespace notmiwae_fast {
namespace {

using namespace autograd;  // OpFunction, Saved, Tensor

using T = const Tensor&;

// Each op: its signature, that of its backward, what the backward reads, and the inputs
// with a gradient.
struct IwLogMeanExp : OpFunction<IwLogMeanExp, Tensor(T), Tensor(T, T), Saved::kInputs, 0> {
  static constexpr const char* kName = "notmiwae_fast::iw_logmeanexp";
};

struct IwWeights : OpFunction<IwWeights, Tensor(T), Tensor(T, T), Saved::kResults, 0> {
  static constexpr const char* kName = "notmiwae_fast::iw_weights";
};

struct IwImpute : OpFunction<IwImpute, Tensor(T, T), std::tuple<Tensor, Tensor>(T, T, T, T),
                             Saved::kInputsAndResults, 0, 1> {
  static constexpr const char* kName = "notmiwae_fast::iw_impute";
};

Tensor iw_logmeanexp_autograd(T log_w) { return IwLogMeanExp::apply(log_w)[0]; }
Tensor iw_weights_autograd(T log_w) { return IwWeights::apply(log_w)[0]; }
Tensor iw_impute_autograd(T log_w, T values) { return IwImpute::apply(log_w, values)[0]; }

}  // namespace

TORCH_LIBRARY_IMPL(notmiwae_fast, Autograd, m) {
  m.impl("iw_logmeanexp", &iw_logmeanexp_autograd);
  m.impl("iw_weights", &iw_weights_autograd);
  m.impl("iw_impute", &iw_impute_autograd);
}

}  // namespace notmiwae_fast
