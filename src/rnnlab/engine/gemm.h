// rnnlab's matmul for the C++ time loops: oneDNN's where it pays, torch's BLAS elsewhere.
//
// Why: torch runs its CPU matmuls (torch.mm, at::addmm_out) on MKL, while torch.nn.LSTM runs on
// oneDNN. On AMD processors with AVX-512, MKL takes its AVX2 code and oneDNN its AVX-512 code, so
// oneDNN's single-precision GEMM runs faster there (benchmarks/bench_kernels.py prints both
// rates and a step's recurrent product with each). Single-precision GEMMs of at least
// kOneDnnMinMacs multiply-adds, none of whose dimensions is below kOneDnnMinDim, go to oneDNN;
// smaller or thinner ones (where a oneDNN call's fixed cost dominates) and double precision
// (which oneDNN does not do) stay on BLAS.
//
// The oneDNN entry point is at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha), which
// computes result = beta·result + alpha·(mat1 @ mat2) into result's memory. libtorch_cpu exports
// it but its installed headers do not declare it, and its behaviour is not part of torch's API
// (torch 2.13's throws on any CPU without AVX-512BW/VL/DQ or AVX-NE-CONVERT, whatever the dtype).
// So it is used only when all of these hold, decided once per process (onednn_state):
//   - the CPU has AVX-512 F/BW/VL/DQ: the only CPUs where it was measured to pay; elsewhere BLAS;
//   - the symbol is found in the loaded torch;
//   - a load-time check passes: the call forms gemm() uses (plain and transposed operands, with
//     and without accumulation), on small matrices, agree with at::mm / at::addmm and throw
//     nothing. A failure keeps BLAS; Python logs the reason once (kernels.py).
// The choice then depends only on the CPU, the shapes and the dtype, never on timing, so a run
// and its resumed continuation make the same choices.
#pragma once

#include <torch/extension.h>

#include "workspace.h"

#ifndef _WIN32
#include <dlfcn.h>
#endif

#include <algorithm>
#include <atomic>
#include <string>

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

// The CPU's widest vector instruction set the kernels know of: "avx512" (F, BW, VL and DQ),
// "avx2" (with FMA), "avx", "sse4.2" or "baseline" on x86-64; the machine's name elsewhere
// (e.g. "aarch64"), where only the compiler's portable code runs.
inline std::string cpu_isa() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  if (__builtin_cpu_supports("avx")) return "avx";
  if (__builtin_cpu_supports("sse4.2")) return "sse4.2";
  return "baseline";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "other";
#endif
}

// Whether mkldnn_matmul computes what at::mm computes, for every call form gemm() makes, on small
// matrices; "" when it does, else why not (an exception's first line, or the largest difference).
inline std::string check_onednn_matmul(OneDnnMatmul f) {
  // Real tensors even when the first use comes under a Python dispatch mode (torch.export's fake
  // tensors): the check must run on data.
  c10::impl::ExcludeDispatchKeyGuard no_python_modes(
      c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot}));
  try {
    const auto opt = at::TensorOptions().dtype(at::kFloat);
    // Deterministic operands, all dimensions at least kOneDnnMinDim (the smallest gemm() sends).
    auto operand = [&](int64_t r, int64_t c, double phase) {
      return at::sin(at::arange(r * c, opt).mul(0.37).add(phase)).view({r, c});
    };
    const Tensor a = operand(24, 40, 0.0), b = operand(40, 32, 1.0);
    const Tensor bt = operand(32, 40, 2.0).t(), at_ = operand(40, 24, 3.0).t();   // transposed views
    const Tensor acc0 = operand(24, 32, 4.0);
    struct Case { Tensor a, b; bool accumulate; };
    const Case cases[] = {{a, b, false}, {a, bt, true}, {at_, b, false}, {at_, bt, true}};
    double worst = 0;
    for (const Case& c : cases) {
      Tensor out = acc0.clone();
      f(c.a, c.b, out, c.accumulate ? 1.0f : 0.0f, 1.0f);
      const Tensor want = c.accumulate ? at::addmm(acc0, c.a, c.b) : at::mm(c.a, c.b);
      worst = std::max(worst, (out - want).abs().max().item<double>());
    }
    if (!(worst <= 1e-4)) return "differs from at::mm by " + std::to_string(worst);   // NaN fails too
    return "";
  } catch (const std::exception& e) {
    std::string msg = e.what();
    return "raised: " + msg.substr(0, msg.find('\n'));
  }
}

struct OneDnnState {
  OneDnnMatmul f = nullptr;   // null: BLAS only
  std::string reason;         // why f is or is not used, one line
  bool check_failed = false;  // found on a CPU where it would be used, but failed the check
};

// Decided once per process, on first use (kernels.py triggers it when the module is loaded).
inline const OneDnnState& onednn_state() {
  static const OneDnnState state = [] {
    OneDnnState s;
    const std::string isa = cpu_isa();
    if (isa != "avx512") {
      s.reason = "the CPU has " + isa + ", not AVX-512, where oneDNN's GEMM was measured to pay";
      return s;
    }
    const OneDnnMatmul f = find_onednn_matmul();
    if (f == nullptr) {
      s.reason = "at::native::mkldnn_matmul is not in this torch";
      return s;
    }
    const std::string err = check_onednn_matmul(f);
    if (!err.empty()) {
      s.reason = "at::native::mkldnn_matmul failed the load-time check against at::mm (" + err + ")";
      s.check_failed = true;
      return s;
    }
    s.f = f;
    s.reason = "AVX-512 CPU; at::native::mkldnn_matmul passed the load-time check against at::mm";
    return s;
  }();
  return state;
}

// 0: BLAS only; 1: oneDNN where it pays (default). Set from Python (fast.set_onednn) for tests
// and benchmarks that compare the two.
inline std::atomic<int>& onednn_enabled() {
  static std::atomic<int> on{1};
  return on;
}

inline OneDnnMatmul onednn_matmul() { return onednn_state().f; }

// How many products went to each library since the last reset: what actually ran, for tests
// that check the choice on emulated CPUs (a relaxed increment per GEMM call; no effect on results).
inline std::atomic<int64_t>* gemm_counts() {
  static std::atomic<int64_t> counts[2] = {{0}, {0}};   // [0] BLAS, [1] oneDNN
  return counts;
}

// Whether a @ b (a (M, K), b (K, N)) goes to oneDNN. Shapes and dtype only.
inline bool use_onednn(const Tensor& a, const Tensor& b) {
  return a.scalar_type() == at::kFloat && a.size(0) * a.size(1) * b.size(1) >= kOneDnnMinMacs &&
         std::min({a.size(0), a.size(1), b.size(1)}) >= kOneDnnMinDim &&
         onednn_enabled().load(std::memory_order_relaxed) && at::globalContext().userEnabledMkldnn() &&
         onednn_matmul() != nullptr;
}

// setup.py compiles the sources' digest in, a bare hex token (kernels.py uses a prebuilt module
// only while it matches); builds on first use have none.
#define RNNLAB_STRINGIFY2(x) #x
#define RNNLAB_STRINGIFY(x) RNNLAB_STRINGIFY2(x)
#ifdef RNNLAB_SOURCE_DIGEST
#define RNNLAB_SOURCE_DIGEST_STR RNNLAB_STRINGIFY(RNNLAB_SOURCE_DIGEST)
#else
#define RNNLAB_SOURCE_DIGEST_STR ""
#endif

// The kernels' module functions about this file, for both extensions' PYBIND11_MODULE.
inline void def_gemm_functions(pybind11::module_& m) {
  m.attr("source_digest") = RNNLAB_SOURCE_DIGEST_STR;
  m.def("set_onednn", [](bool on) { onednn_enabled().store(on ? 1 : 0); });
  m.def("cpu_isa", &cpu_isa);
  // (uses oneDNN, why, whether its load-time check failed); decides on the first call
  m.def("onednn_state", [] {
    const OneDnnState& s = onednn_state();
    return std::make_tuple(s.f != nullptr, s.reason, s.check_failed);
  });
  // The load-time check run now whatever the CPU ("" = passed): what it would say here.
  m.def("onednn_check", [] {
    const OneDnnMatmul f = find_onednn_matmul();
    return f == nullptr ? std::string("not found") : check_onednn_matmul(f);
  });
  m.def("gemm_counts", [](bool reset) {   // (BLAS, oneDNN) products since the last reset
    std::atomic<int64_t>* c = gemm_counts();
    const auto out = std::make_pair(c[0].load(), c[1].load());
    if (reset) c[0] = c[1] = 0;
    return out;
  });
  m.def("gemm_backend", [](int64_t M, int64_t K, int64_t N) {   // which library a float32 (M,K)@(K,N) uses
    const auto f32 = at::TensorOptions().dtype(at::kFloat);
    return std::string(use_onednn(at::empty({M, K}, f32), at::empty({K, N}, f32)) ? "onednn" : "blas");
  });
}

// out ← a @ b, or out ← out + a @ b with accumulate. out (M, N) with contiguous rows (a row block
// of a larger buffer is fine); a and b contiguous or transposed views.
inline void gemm(const Tensor& out, const Tensor& a, const Tensor& b, bool accumulate) {
  const bool onednn = use_onednn(a, b);
  gemm_counts()[onednn ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
  if (onednn) {
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
