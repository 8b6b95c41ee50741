// rnnlab's matmul for the C++ time loops: oneDNN's where it pays, torch's BLAS elsewhere.
//
// Why: torch runs its CPU matmuls (torch.mm, at::addmm_out) on MKL, while torch.nn.LSTM runs on
// oneDNN. On AMD processors with AVX-512, MKL takes its AVX2 code and oneDNN its AVX-512 code:
// on a 2-core AMD EPYC (benchmarks/bench_kernels.py), oneDNN's single-precision GEMM ran at 438
// GFLOP/s and MKL's at 209, and a step's recurrent product at B=32 H=256 took 62 µs against 108.
// So single-precision GEMMs of at least kOneDnnMinMacs multiply-adds, none of whose dimensions is
// below kOneDnnMinDim, go to oneDNN; smaller or thinner ones (where a oneDNN call's fixed cost of
// ~10 µs dominates) and double precision (which oneDNN does not do) stay on BLAS.
//
// The oneDNN entry point is at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha), which
// computes result = beta·result + alpha·(mat1 @ mat2) into result's memory. libtorch_cpu exports
// it but its installed headers do not declare it, so it is looked up at run time: a torch build
// without it (or with oneDNN switched off by torch.backends.mkldnn.flags(enabled=False)) keeps
// BLAS, with the same results up to rounding. The choice depends only on the shapes and the
// dtype, never on timing, so a run and its resumed continuation make the same choices.
#pragma once

#include <torch/extension.h>

#include "workspace.h"

#ifndef _WIN32
#include <dlfcn.h>
#endif

#include <algorithm>
#include <atomic>

namespace rnnlab {

using at::Tensor;
using OneDnnMatmul = void (*)(const Tensor&, const Tensor&, const Tensor&, float, float);

constexpr int64_t kOneDnnMinMacs = int64_t(1) << 21;   // M·K·N; below it BLAS is as fast or faster
// Every dimension at least this: a matrix-vector product gains nothing from oneDNN, and with one
// row, a transposed right operand and accumulation (beta = 1), mkldnn_matmul in torch 2.13 was
// seen to corrupt the heap (B = 1, H >= 1200), so thin products never go there.
constexpr int64_t kOneDnnMinDim = 8;

inline OneDnnMatmul find_onednn_matmul() {
#ifdef _WIN32
  return nullptr;                                       // (the Itanium-mangled name is Linux/macOS only)
#else
  static const char* kSymbol = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff";
  void* f = dlsym(RTLD_DEFAULT, kSymbol);
  if (f == nullptr) {                                   // torch's libraries loaded RTLD_LOCAL
    if (void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD)) f = dlsym(lib, kSymbol);
  }
  return reinterpret_cast<OneDnnMatmul>(f);
#endif
}

// 0: BLAS only; 1: oneDNN where it pays (default). Set from Python (set_gemm_backend) for tests
// and benchmarks that compare the two.
inline std::atomic<int>& onednn_enabled() {
  static std::atomic<int> on{1};
  return on;
}

inline OneDnnMatmul onednn_matmul() {
  static const OneDnnMatmul f = find_onednn_matmul();
  return f;
}

// Whether a @ b (a (M, K), b (K, N)) goes to oneDNN. Shapes and dtype only.
inline bool use_onednn(const Tensor& a, const Tensor& b) {
  return a.scalar_type() == at::kFloat && a.size(0) * a.size(1) * b.size(1) >= kOneDnnMinMacs &&
         std::min({a.size(0), a.size(1), b.size(1)}) >= kOneDnnMinDim &&
         onednn_enabled().load(std::memory_order_relaxed) && at::globalContext().userEnabledMkldnn() &&
         onednn_matmul() != nullptr;
}

// out ← a @ b, or out ← out + a @ b with accumulate. out (M, N) with contiguous rows (a row block
// of a larger buffer is fine); a and b contiguous or transposed views.
inline void gemm(const Tensor& out, const Tensor& a, const Tensor& b, bool accumulate) {
  if (use_onednn(a, b)) {
    onednn_matmul()(a, b, out, accumulate ? 1.0f : 0.0f, 1.0f);
  } else if (accumulate) {
    out.addmm_(a, b);
  } else {
    Tensor o = out;
    at::mm_out(o, a, b);
  }
}

// The whole-sequence products of the Python side (input projection, weight gradients): a new
// (M, N) tensor a @ b, plus bias (N) broadcast over the rows when given.
inline Tensor matmul(const Tensor& a, const Tensor& b, const c10::optional<Tensor>& bias) {
  constexpr size_t kMatmulSlot = 100;                             // workspace.h: reused when free
  Tensor out = workspace(kMatmulSlot, {a.size(0), b.size(1)}, a.options());   // never a view of the bias
  if (bias) out.copy_(bias->expand({a.size(0), b.size(1)}));
  gemm(out, a, b, bias.has_value());
  return out;
}

}  // namespace rnnlab
