// cpu::OneThread: the calling thread's OpenMP thread count (which ATen's parallel_for
// reads) and MKL's thread-local one set to 1 while it lives, and put back after; only
// this thread is limited. Small CPU work runs under it: waking threads that sleep
// between parallel regions (OMP_WAIT_POLICY=PASSIVE, or any pool that has gone idle)
// costs tens of microseconds a region, more than a small product or pass saves.
#pragma once

#include <omp.h>

// The C entry point of MKL's mkl_set_num_threads_local, exported by torch's CPU library
// when it is built with MKL; weak, so a torch without MKL leaves it null.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace notmiwae_fast {
namespace cpu {

// Nothing to do (and nothing done) when the thread already runs alone: one thread
// allowed, or inside a parallel region (nested regions run serially).
class OneThread {
 public:
  OneThread()
      : omp_previous_(omp_get_max_threads()), active_(omp_previous_ > 1 && !omp_in_parallel()) {
    if (!active_) return;
    omp_set_num_threads(1);
    if (MKL_Set_Num_Threads_Local != nullptr) mkl_previous_ = MKL_Set_Num_Threads_Local(1);
  }
  ~OneThread() {
    if (!active_) return;
    omp_set_num_threads(omp_previous_);
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(mkl_previous_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int omp_previous_;
  bool active_;
  int mkl_previous_ = 0;
};

}  // namespace cpu
}  // namespace notmiwae_fast
