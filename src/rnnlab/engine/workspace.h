// Large per-call buffers of the C++ loops, reused from call to call when nobody holds them.
//
// Why: a training step allocates tens of MB of activations and gradients (the layer-norm LSTM at
// T=100 B=64 H=128: about 80 MB), and torch's CPU allocator hands such sizes straight to the
// system, so every step page-faults all of it in afresh, which costs a large share of such a
// step (glibc told to keep freed memory instead runs it markedly faster). So buffers come from a
// small per-thread pool: a buffer's memory is handed out again (as a new
// tensor over it) only when no tensor but the pool's own uses it any more (autograd has released
// the saved tensors, the user holds no output or view of it), for the same sizes and options;
// otherwise a new one is allocated and joins the pool, which keeps the most recent few. The contents are not cleared: callers
// write every element (at::empty semantics).
#pragma once

#include <torch/extension.h>

#include <atomic>
#include <deque>
#include <vector>

namespace rnnlab {

constexpr size_t kPoolPerSlot = 4;   // e.g. two layers × two directions of one step in flight

inline std::vector<std::deque<at::Tensor>>& workspace_pools() {
  thread_local std::vector<std::deque<at::Tensor>> pools;   // [slot] -> the most recent buffers
  return pools;
}

// Drop this thread's pooled buffers (their memory goes back once nobody else holds them).
inline void release_workspace() { workspace_pools().clear(); }

// A new tensor over `owner`'s memory (its own TensorImpl: the pool never hands out its own
// handles, because torch keeps a Python object alive, and with it a reference, for as long as C++
// holds the TensorImpl it wraps; a storage, in contrast, is free once its last tensor is gone).
inline at::Tensor over(const at::Tensor& owner, at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty({0}, options);
  t.set_(owner.storage(), 0, sizes, c10::contiguous_strides(sizes));
  return t;
}

// Reuse on (default) or off (every call allocates, as torch would): set from Python, set_reuse.
inline std::atomic<bool>& reuse_enabled() {
  static std::atomic<bool> on{true};
  return on;
}

// A buffer for `slot` (a small integer naming one kind of buffer of one kernel).
inline at::Tensor workspace(size_t slot, at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!reuse_enabled().load(std::memory_order_relaxed)) return at::empty(sizes, options);
  auto& pools = workspace_pools();
  if (pools.size() <= slot) pools.resize(slot + 1);
  auto& pool = pools[slot];
  for (const at::Tensor& t : pool)
    if (t.storage().use_count() == 1 && t.sizes() == sizes && t.dtype() == options.dtype() &&
        t.device() == options.device())
      return over(t, sizes, options);
  at::Tensor owner = at::empty(sizes, options);
  pool.push_back(owner);
  if (pool.size() > kPoolPerSlot) pool.pop_front();
  return over(owner, sizes, options);
}

}  // namespace rnnlab
