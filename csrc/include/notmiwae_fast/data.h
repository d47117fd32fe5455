// The data family (observed_data): checks shared by its CPU kernel and its composite
// (any-device) implementation.
#pragma once

#include <ATen/ATen.h>

#include "notmiwae_fast/checks.h"

namespace notmiwae_fast {

// x floating, s (bool, integer or floating) of x's shape and device.
inline void check_observed_data(const at::Tensor& x, const at::Tensor& s) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(s.device() == x.device(), "notmiwae_fast: argument 's' is on ", s.device(),
                    " but 'x' is on ", x.device(), "; move them to one device");
  TORCH_CHECK_TYPE(!at::isComplexType(s.scalar_type()),
                   "notmiwae_fast: argument 's' must "
                   "be a bool, integer or real floating mask; got dtype ",
                   s.scalar_type());
  TORCH_CHECK_VALUE(s.sizes() == x.sizes(),
                    "notmiwae_fast: argument 's' must have the shape "
                    "of 'x' ",
                    x.sizes(), "; got ", s.sizes());
}

}  // namespace notmiwae_fast
