// Looking up notmiwae_fast operators in the dispatcher (for the C++ autograd
// functions, which call the forward and backward kernels through it).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace notmiwae_fast {

// The typed handle of operator `name` ("notmiwae_fast::<op>"); throws if undefined.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace notmiwae_fast
