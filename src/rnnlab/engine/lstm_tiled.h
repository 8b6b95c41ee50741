// The LSTM's time loop in a unit-major layout with its own SIMD matrix kernels ("tiled").
//
// Why: at the sizes people train (B = 32, H = 256), a step of the row-major loop in
// fast_kernels.cpp is one library GEMM (32 × 256 × 1024) plus a pointwise pass in its own
// parallel region. The library runs a product this small well below its large-matrix rate
// (benchmarks/bench_kernels.py prints both), and the step forks and joins the threads twice. Here each
// thread owns a contiguous range of hidden units for the whole sequence and computes everything
// of its units: the four gates' recurrent products for those units (W_hh's rows, packed once
// per call so the thread streams them from its own cache), the activations and the cell update
// while the sums are still in registers, and in backward the units' gate gradients and their
// share of ∂L/∂h_{t-1}. Threads meet once per step (h_t, or the step's gate gradients, must be
// complete before anyone reads them): one barrier instead of two fork/joins.
//
// Layout: a step's states are (H, Bp), unit-major, the batch padded with zero columns to Bp, a
// multiple of the vector width W (16 floats with AVX-512, 8 with AVX2), so one vector holds W
// batch columns of one unit and every operation is a whole-vector one. The gates (and their
// gradients) are (4H, T, Bp): the rows of W_ih / W_hh in torch's order, each a run over time,
// which makes the weight gradients single matmuls over (4H, T·Bp). hs comes back in the usual
// (T+1, Bp, H) layout (one transpose after the loop) for the outputs and ∂L/∂W.
//
// Same equations and saved quantities as the other engines (gates after activation, c, tanh(c),
// h); the matmuls accumulate in a different order, so results agree to float32 rounding (the
// tests compare against the reference engine and torch.nn). Single precision only, on x86 CPUs
// with AVX-512 or AVX2+FMA, and for whole sequences without padding masks; everything else
// keeps the row-major loop. The instruction set is picked at run time; the loops themselves are
// written once (lstm_tiled_loops.h) and compiled once per instruction set.
//
// The same machinery (vector types, σ, register tiles over units, the thread team) also runs the
// LSTM's row-major inference and training loops (lstm_infer, rows_forward / rows_backward below)
// and the GRU's and vanilla RNN's inference loops (gru_infer, rnn_infer; their tiles in
// gru_loops.h and rnn_loops.h).
#pragma once

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "workspace.h"

// GCC only: the instruction sets are switched per region with `#pragma GCC target`, which clang
// ignores (there the row-major loop runs; fast_kernels.cpp's per-function target attributes are
// fine with both).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define RNNLAB_TILED_X86 1
#endif

namespace rnnlab::tiled {

using at::Tensor;

struct FwdArgs {
  const float* w_hh;   // (4H, H)
  float* packed;       // 4H·H floats of scratch for the packed weights
  float* xg;           // (4H, T, Bp): the input projection on entry, the gates on return
  const float* bias;   // (4H) b_ih + b_hh, or null
  float* hT;           // (T+1, H, Bp) h_0..h_T
  float* cs;           // (T+1, H, Bp) c_0..c_T
  float* tcs;          // (T, H, Bp) tanh(c_t)
  int64_t T, H, Bp;
  int threads;         // the team's size at most (team_size())
};

struct BwdArgs {
  const float* w_hh;   // (4H, H)
  float* packed;       // 4H·H floats of scratch
  const float* gates;  // (4H, T, Bp)
  const float* cs;     // (T+1, H, Bp)
  const float* tcs;    // (T, H, Bp)
  const float* d_out;  // (T, H, Bp) ∂L/∂output
  float* da;           // (4H, T, Bp) out: ∂L/∂(pre-activations)
  float* dh;           // (H, Bp) in: ∂L/∂h_T; out: ∂L/∂h_0
  float* dc;           // (H, Bp) in: ∂L/∂c_T; out: ∂L/∂c_0
  float* rec_h;        // (T, threads, Bp) partial Σ (∂L/∂h_t)², or null (no gradient record)
  float* rec_c;        // (T, threads, Bp) partial Σ (∂L/∂c_t)², or null
  int64_t T, H, Bp;
  int threads;         // the team's size at most (team_size()); rec_h / rec_c have this many rows per step
};

// Rows of a (T, B, ·) array where they lie: step t of sequence b at p + t·st + b·sb. Time-major
// rows, or batch-major ones for a batch-first input (its (T, B, ·) view of a (B, T, ·) tensor, or
// a GEMM's (B·T, ·) product of it).
struct StepRows {
  const float* p = nullptr;
  int64_t st = 0, sb = 0;
  const float* at(int64_t t, int64_t b) const { return p + t * st + b * sb; }
};

// The input of an inference loop that forms W_ih x_t in its tiles (fuse_input), or none (x.p null):
// then the loop reads a GEMM's projection xg instead.
struct FusedInput {
  StepRows x;                    // (T, B, I) x_t rows
  const float* w_ih = nullptr;   // (NG·H, I)
  float* packed = nullptr;       // NG·H·I floats of scratch for W_ih packed as W_hh is
  int64_t I = 0;
};

// What the inference loops of the three cells (NG gates: 4, 3, 1) read alike; the vanilla RNN's
// training forward borrows its loop too.
struct InferLoop {
  const float* w_hh;   // (NG·H, H)
  float* packed;       // NG·H·H floats of scratch for the packed weights
  StepRows xg;         // W_ih x_t (NG·H columns, no bias unless a cell's bias is null), or none (p null) when x is given
  const float* h0;     // (B, H)
  float* out;          // (T, B, H) out: h_1..h_T (zero at invalid steps)
  float* h;            // (2, B, H) scratch with a mask: h_t in row t mod 2 (out is not the state then)
  const bool* mask;    // (T, B) valid steps, or null: an invalid step carries the state unchanged
  int64_t T, B, H;
  int threads;         // the team's size at most (team_size())
  FusedInput in;       // the input when its projection is formed in the tiles (xg.p null)
};

struct InferArgs : InferLoop {   // the LSTM's (lstm_tiled_loops.h)
  const float* bias;   // (4H) b_ih + b_hh, or null
  const float* c0;     // (B, H)
  float* c;            // (2, B, H) scratch: c_t in row t mod 2
};

struct GruInferArgs : InferLoop {   // the GRU's (gru_loops.h)
  const float* b_ih;   // (3H)
  const float* b_hh;   // (3H)
};

struct GruRowsArgs {    // the GRU's row-major training forward (gru_loops.h)
  const float* w_hh;   // (3H, H)
  float* packed;       // 3H·H floats of scratch for the packed weights
  float* gates;        // (T, B, 3H): W_ih x_t (+ b_ih where b_ih is null) on entry, r, z, n on return
  float* hn;           // (T, B, H) out: W_hn h_{t-1} + b_hn
  float* hs;           // (T+1, B, H): h_0 on entry, h_0..h_T on return
  const float* b_hh;   // (3H)
  const bool* mask;    // (T, B) valid steps, or null: an invalid step carries h unchanged
  int64_t T, B, H;
  int threads;         // the team's size at most (team_size())
  const float* b_ih = nullptr;   // (3H) to add to gates on entry, or null
};

struct RnnInferArgs : InferLoop {   // the vanilla RNN's (rnn_loops.h)
  const float* bias;   // (H) b_ih + b_hh, or null
  bool relu;           // relu instead of tanh
  bool carry = false;  // with a mask, out holds the states (h carried past each end) rather than zeros
};

struct RowFwdArgs {
  const float* w_hh;   // (4H, H)
  float* packed;       // 4H·H floats of scratch for the packed weights
  float* gates;        // (T, B, 4H): W_ih x_t (+ b, unless bias) on entry, the gates (after activation) on return
  float* hs;           // (T+1, B, H): h_0 on entry, h_0..h_T on return
  float* cs;           // (T+1, B, H): c_0 on entry, c_0..c_T on return
  float* tcs;          // (T, B, H) out: tanh(c_t)
  const bool* mask;    // (T, B) valid steps, or null: an invalid step carries h and c unchanged
  int64_t T, B, H;
  int threads;         // the team's size at most (team_size())
  const float* bias = nullptr;   // (4H) b_ih + b_hh to add to gates on entry, or null
};

struct RowBwdArgs {
  const float* w_hh;   // (4H, H)
  float* packed;       // 4H·H floats of scratch
  const float* gates;  // (T, B, 4H) and the states, as RowFwdArgs left them
  const float* cs;     // (T+1, B, H)
  const float* tcs;    // (T, B, H)
  const float* d_out;  // (T, B, H) ∂L/∂output
  float* da;           // (T, B, 4H) out: ∂L/∂(pre-activations)
  float* dh;           // (B, H) in: ∂L/∂h_T; out: ∂L/∂h_0
  float* dc;           // (B, H) in: ∂L/∂c_T; out: ∂L/∂c_0
  const bool* mask;    // (T, B) or null, as the forward's
  int64_t T, B, H;
  int threads;
};

// How many threads a loop runs on: torch's intra-op count (at::get_num_threads also sets up
// OpenMP's count on a thread torch has not initialised yet, e.g. an autograd or user thread), or
// one inside a parallel region. Decided once per call, before anything is sized by it.
inline int team_size() { return at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads()); }

// f(thread, threads) on an OpenMP team of at most n threads (the pool at::parallel_for uses), or
// f(0, 1) for n = 1. The team may be smaller than asked; f partitions by the size it gets.
template <class F>
void run_team(int n, const F& f) {
  if (n <= 1) {
    f(0, 1);
    return;
  }
#pragma omp parallel num_threads(n)
  { f(omp_get_thread_num(), omp_get_num_threads()); }
}

inline void team_barrier(int threads) {
  if (threads > 1) {
#pragma omp barrier
  }
}

// Thread `tid`'s units: an even share of H, its start rounded to a multiple of `block`.
inline void unit_range(int64_t H, int64_t block, int tid, int threads, int64_t* u0, int64_t* u1) {
  auto start = [&](int k) {
    return k >= threads ? H : std::min(H, (k * H / threads + block / 2) / block * block);
  };
  *u0 = start(tid);
  *u1 = start(tid + 1);
}

// Vectors per column block: the largest of max_nb, ..., 1 that divides the row's vector count.
inline int column_block(int64_t vectors, int max_nb) {
  for (int nb = max_nb; nb > 1; --nb)
    if (vectors % nb == 0) return nb;
  return 1;
}

#ifdef RNNLAB_TILED_X86
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
struct V {
  using reg = __m512;
  static constexpr int W = 16, kAcc = 24, kMaxNB = 4;   // 32 registers: 24 sums + operands
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }    // a·b + c
  static reg fnma(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }  // c − a·b
  static reg round(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg ldexp(reg p, reg m) { return _mm512_scalef_ps(p, m); }           // p·2^m
  static reg rcp(reg a) { return _mm512_rcp14_ps(a); }                        // 1/a within 2^-14
  // Row i of the W×W block at d (rows ld apart) = column i of the block at s (rows ls apart).
  static void transpose(const float* s, int64_t ls, float* d, int64_t ld) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; ++i) {                        // lane L of t[2i], t[2i+1]: rows 2i, 2i+1 at 4L..4L+3
      const __m512 a = _mm512_loadu_ps(s + 2 * i * ls), b = _mm512_loadu_ps(s + (2 * i + 1) * ls);
      t[2 * i] = _mm512_unpacklo_ps(a, b), t[2 * i + 1] = _mm512_unpackhi_ps(a, b);
    }
    for (int q = 0; q < 4; ++q) {                        // lane L of u[4q+j]: rows 4q..4q+3 at column 4L+j
      const __m512 *lo = t + 4 * q, *hi = t + 4 * q + 2;
      u[4 * q] = _mm512_shuffle_ps(lo[0], hi[0], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * q + 1] = _mm512_shuffle_ps(lo[0], hi[0], _MM_SHUFFLE(3, 2, 3, 2));
      u[4 * q + 2] = _mm512_shuffle_ps(lo[1], hi[1], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * q + 3] = _mm512_shuffle_ps(lo[1], hi[1], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; ++j) {                        // columns j, 4+j, 8+j, 12+j: lanes of u[j], u[4+j], ...
      const __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], _MM_SHUFFLE(1, 0, 1, 0));
      const __m512 x1 = _mm512_shuffle_f32x4(u[j], u[4 + j], _MM_SHUFFLE(3, 2, 3, 2));
      const __m512 y0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], _MM_SHUFFLE(1, 0, 1, 0));
      const __m512 y1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], _MM_SHUFFLE(3, 2, 3, 2));
      _mm512_storeu_ps(d + j * ld, _mm512_shuffle_f32x4(x0, y0, _MM_SHUFFLE(2, 0, 2, 0)));
      _mm512_storeu_ps(d + (4 + j) * ld, _mm512_shuffle_f32x4(x0, y0, _MM_SHUFFLE(3, 1, 3, 1)));
      _mm512_storeu_ps(d + (8 + j) * ld, _mm512_shuffle_f32x4(x1, y1, _MM_SHUFFLE(2, 0, 2, 0)));
      _mm512_storeu_ps(d + (12 + j) * ld, _mm512_shuffle_f32x4(x1, y1, _MM_SHUFFLE(3, 1, 3, 1)));
    }
  }
};
#include "lstm_tiled_loops.h"
#include "gru_loops.h"
#include "rnn_loops.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct V {
  using reg = __m256;
  static constexpr int W = 8, kAcc = 12, kMaxNB = 3;    // 16 registers: 12 sums + operands
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnma(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg round(reg a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg ldexp(reg p, reg m) {                      // m integral in [−126, 127]: build 2^m's bits
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(m), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static reg rcp(reg a) { return _mm256_rcp_ps(a); }                          // 1/a within 1.5·2^-12
  // Row i of the W×W block at d (rows ld apart) = column i of the block at s (rows ls apart).
  static void transpose(const float* s, int64_t ls, float* d, int64_t ld) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {                        // lane L of t[2i], t[2i+1]: rows 2i, 2i+1 at 4L..4L+3
      const __m256 a = _mm256_loadu_ps(s + 2 * i * ls), b = _mm256_loadu_ps(s + (2 * i + 1) * ls);
      t[2 * i] = _mm256_unpacklo_ps(a, b), t[2 * i + 1] = _mm256_unpackhi_ps(a, b);
    }
    for (int q = 0; q < 2; ++q) {                        // lane L of u[4q+j]: rows 4q..4q+3 at column 4L+j
      const __m256 *lo = t + 4 * q, *hi = t + 4 * q + 2;
      u[4 * q] = _mm256_shuffle_ps(lo[0], hi[0], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * q + 1] = _mm256_shuffle_ps(lo[0], hi[0], _MM_SHUFFLE(3, 2, 3, 2));
      u[4 * q + 2] = _mm256_shuffle_ps(lo[1], hi[1], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * q + 3] = _mm256_shuffle_ps(lo[1], hi[1], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; ++j) {                        // columns j and 4+j: the lanes of u[j] and u[4+j]
      _mm256_storeu_ps(d + j * ld, _mm256_permute2f128_ps(u[j], u[4 + j], 0x20));
      _mm256_storeu_ps(d + (4 + j) * ld, _mm256_permute2f128_ps(u[j], u[4 + j], 0x31));
    }
  }
};
#include "lstm_tiled_loops.h"
#include "gru_loops.h"
#include "rnn_loops.h"
}  // namespace avx2
#pragma GCC pop_options
#endif  // RNNLAB_TILED_X86

// The instruction set the tiled loops run with here: "avx512", "avx2" or "" (not available).
inline const std::string& detected_isa() {
  static const std::string isa = [] {
#ifdef RNNLAB_TILED_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return std::string("avx512");
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return std::string("avx2");
#endif
    return std::string();
  }();
  return isa;
}

// The user's choice (fast.set_tiled): "auto" (default), "avx512", "avx2" or "off"; an atomic index
// into kChoices, since a setter may run while another thread is inside a loop (GIL released).
constexpr const char* kChoices[] = {"auto", "avx512", "avx2", "off"};
inline std::atomic<int>& choice_index() {
  static std::atomic<int> c{0};
  return c;
}
inline std::string choice() { return kChoices[choice_index().load(std::memory_order_relaxed)]; }

inline bool set_choice(const std::string& want) {
  const std::string have = detected_isa();
  const bool ok = want == "auto" || want == "off" || (want == "avx2" && !have.empty()) ||
                  (want == "avx512" && have == "avx512");
  if (!ok) return false;
  for (int k = 0; k < 4; ++k)
    if (want == kChoices[k]) choice_index().store(k);
  return true;
}

// The instruction set for a batch of B sequences, "" for the row-major loop. Under "auto", from
// benchmarks/bench_kernels.py's batch sweep (LSTM T=35 I=32 H=256, training, against the
// row-major loop as it runs on the same CPU):
//   - fewer than 4 sequences keep the row-major loop everywhere (padded to 8 columns, the saved
//     activations would more than double, and at B = 1 the library's matrix-vector product is
//     faster than a tile);
//   - on AVX-512 CPUs, up to 8 sequences take AVX2's 8-column vectors rather than half-empty
//     16-column ones, more take AVX-512;
//   - on CPUs with AVX2 but not AVX-512, the row-major loop's step products run on torch's BLAS
//     (gemm.h), which beat the AVX2 tiles at 4 sequences ("row-major BLAS" against "tiled AVX2
//     BLAS", the AVX2 code run on an AVX-512 CPU with oneDNN off); from 8 on the tiles win.
inline std::string isa_for(int64_t B) {
  const std::string c = choice();
  if (c != "auto") return c == "off" ? std::string() : c;
  const std::string& have = detected_isa();
  if (have.empty() || B < 4) return "";
  if (have == "avx512") return B <= 8 ? "avx2" : "avx512";
  return B >= 8 ? "avx2" : "";
}

// (B, H) → (H, Bp) with zero padding, into dst.
inline void to_unit_major(const Tensor& src, const Tensor& dst) {
  const int64_t B = src.size(0);
  dst.narrow(1, B, dst.size(1) - B).zero_();
  dst.narrow(1, 0, B).copy_(src.t());
}

// The padded batch and instruction set of the rnnlab::lstm_tiled_forward operator (fast_kernels.cpp),
// which torch.compile traces: its saved buffers' shapes must be a function of B alone that the
// operator's fake implementation (engine/ops.py) computes from a symbolic B, the same on every CPU,
// so the batch is padded to a multiple of 8 whatever the instruction set, and AVX-512 runs where
// that padding fits its 16 columns (as the eager rule: B ≤ 8 takes AVX2, 9..16 AVX-512; from
// 17 on, batches that pad to an odd multiple of 8 take AVX2 here where eager pads to 16).
inline int64_t op_padded_batch(int64_t B) { return (B + 7) / 8 * 8; }

inline std::string op_isa(int64_t Bp) {
  const std::string& have = detected_isa();
  if (have.empty()) return have;
  return have == "avx512" && choice() != "avx2" && Bp % 16 == 0 ? std::string("avx512") : std::string("avx2");
}

// Workspace slots (workspace.h) of this file: 20..29 and 32..37.
// Forward over a whole sequence with instruction set `isa` ("avx512" or "avx2") and the batch padded
// to Bp (a multiple of its vector width). x (T, B, I), h0 / c0 (B, H), w_ih (4H, I), w_hh (4H, H),
// bias (4H) = b_ih + b_hh or undefined; float32, contiguous. Returns {hT (T+1, H, Bp) (the states
// unit-major), cs (T+1, H, Bp), gates (4H, T, Bp), tcs (T, H, Bp)}.
inline std::vector<Tensor> lstm_forward_padded(const std::string& isa, int64_t Bp, const Tensor& x, const Tensor& h0,
                                               const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                                               const c10::optional<Tensor>& bias) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(1);
  TORCH_CHECK(Bp >= B && Bp % (isa == "avx512" ? 16 : 8) == 0, "lstm_tiled_forward: padded batch ", Bp,
              " does not fit ", isa);
  const auto opt = x.options();
  Tensor xp = x;
  if (Bp != B) {
    xp = workspace(20, {T, Bp, I}, opt);
    xp.narrow(1, B, Bp - B).zero_();
    xp.narrow(1, 0, B).copy_(x);
  }
  Tensor gates = workspace(21, {4 * H, T, Bp}, opt);
  gemm(gates.view({4 * H, T * Bp}), w_ih, xp.view({T * Bp, I}).t(), false);   // input projection
  Tensor hT = workspace(22, {T + 1, H, Bp}, opt);
  Tensor cs = workspace(23, {T + 1, H, Bp}, opt);
  Tensor tcs = workspace(24, {T, H, Bp}, opt);
  Tensor packed = workspace(25, {4 * H * H}, opt);
  to_unit_major(h0, hT[0]);
  to_unit_major(c0, cs[0]);
  Tensor b = bias ? bias->contiguous() : Tensor();
  FwdArgs a{w_hh.data_ptr<float>(), packed.data_ptr<float>(), gates.data_ptr<float>(),
            b.defined() ? b.data_ptr<float>() : nullptr, hT.data_ptr<float>(), cs.data_ptr<float>(),
            tcs.data_ptr<float>(), T, H, Bp, team_size()};
#ifdef RNNLAB_TILED_X86
  if (isa == "avx512") avx512::forward(a);
  else avx2::forward(a);
#endif
  return {hT, cs, gates, tcs};
}

// hs (T+1, Bp, H), the usual layout, from lstm_forward_padded's hT.
inline Tensor row_major_states(const Tensor& hT) {
  Tensor hs = workspace(26, {hT.size(0), hT.size(2), hT.size(1)}, hT.options());
  hs.copy_(hT.permute({0, 2, 1}));
  return hs;
}

// The eager engine's entry: the instruction set and padding of isa_for's batch rule.
inline std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                        const Tensor& w_hh, const c10::optional<Tensor>& bias) {
  const std::string isa = isa_for(x.size(1));
  TORCH_CHECK(!isa.empty(), "lstm_tiled_forward: the tiled loop does not run here (tiled_isa_for is empty)");
  const int64_t width = isa == "avx512" ? 16 : 8;
  auto r = lstm_forward_padded(isa, (x.size(1) + width - 1) / width * width, x, h0, c0, w_ih, w_hh, bias);
  r[0] = row_major_states(r[0]);
  return r;
}

// The instruction set the inference loop (lstm_infer) runs with for H units: its vectors hold
// units, so H must be a multiple of their width; "" where it cannot run. Under set_tiled's "avx2"
// it uses AVX2. infer_isa also says "" under "off" (the row-major loop serves eager calls); the
// operator a compiled graph holds keeps running then, as the tiled one does (run_isa).
inline std::string infer_run_isa(int64_t H) {
  const std::string& have = detected_isa();
  if (have.empty()) return "";
  if (have == "avx512" && choice() != "avx2" && H % 16 == 0) return "avx512";
  return H % 8 == 0 ? "avx2" : "";
}
inline std::string infer_isa(int64_t H) { return choice() == "off" ? std::string() : infer_run_isa(H); }

// Where the inference loop runs rather than the tiled or row-major loop, for B sequences of T steps:
// W_hh is read once per block of kInferMaxNB sequences per step, so it pays while W_hh (4H·H floats)
// stays in a core's L2 cache, H ≤ infer_max_hidden(), or the batch is small; and each call packs
// W_hh anew (4H·H floats), which T·B ≥ H² / 8192 sequence-steps repay (8 at 256 units, 128 at 1024;
// benchmarks/bench_kernels.py --inference sweeps hidden size, batch and length). With AVX-512 the
// bound is 512 units: a panel of 16 units' W_hh rows (128 KiB) stays in L2 while every block of
// sequences reads it, and the loop writes no gates for a backward, so at 512 units it is ahead of
// the tiled loop (the LSTM) and of the library loop (GRU, vanilla RNN); with AVX2 it is not.
constexpr int64_t kInferMaxHidden = 256, kInferMaxHiddenAvx512 = 512, kInferMaxBatch = 8;
inline int64_t infer_max_hidden() {
  return infer_run_isa(kInferMaxHiddenAvx512) == "avx512" ? kInferMaxHiddenAvx512 : kInferMaxHidden;
}
// Whether T·B sequence-steps repay packing W_hh (4H·H floats) for one pass, as the loops over units
// (inference, row-major training) do on every call.
inline bool packing_pays(int64_t B, int64_t H, int64_t T) { return T * B * 8192 >= H * H; }
inline std::string infer_isa_for(int64_t B, int64_t H, int64_t T) {
  const bool pays = (H <= infer_max_hidden() || B <= kInferMaxBatch) && packing_pays(B, H, T);
  return pays ? infer_isa(H) : std::string();
}

// Whether the inference loop forms W_ih x_t in its tiles, beside W_hh h_{t-1}, for B sequences of
// I inputs, rather than in one GEMM over the whole sequence first. In the tiles, a step reads x_t
// (I floats a sequence) instead of its row of the (T, B, 4H) projection that the GEMM wrote to
// memory, but every block of up to kInferMaxNB sequences reads the packed W_ih panels (4H·I floats)
// again at every step, where the GEMM reads each weight once for many rows. So: while I ≤ H, from
// 16 sequences on (three blocks or more), or from 8 while the packed W_ih and W_hh stay within
// kFusedMaxBytes, about what a core's L2 cache keeps beside the states (W_hh alone at 256 units is
// 1 MiB). benchmarks/bench_kernels.py --inference-input times both at sizes either side.
constexpr int64_t kFusedMaxBytes = 1280 * 1024;
inline bool fuse_input(int64_t B, int64_t I, int64_t H) {
  return I <= H && (B >= 16 || (B >= 8 && 16 * H * (I + H) <= kFusedMaxBytes));
}

// What the inference loops (lstm_infer, gru_infer, rnn_infer) share: the checks of x (T, B, I),
// h0 (B, H), w_ih (NG·H, I), w_hh (NG·H, H) and mask (T, B), float32, for a cell of NG gates; the
// input projection, by a GEMM first (xg) or left to the tiles (packed_ih: `fused`, or as fuse_input
// says when unset); the output and, with a mask, the state scratch.
struct InferBuffers {
  std::string isa;
  int64_t T, B, I, H;
  bool fuse;
  Tensor x, w_ih, w_hh, h0, xg, packed, packed_ih, out, h, mask;

  int64_t xg_st = 0, xg_sb = 0;   // the GEMM's rows: time-major, or batch-major for a batch-first x
  StepRows projection() const { return fuse ? StepRows{} : StepRows{xg.data_ptr<float>(), xg_st, xg_sb}; }
  InferLoop loop() const {        // (threads: team_size(), decided here once per call)
    return {w_hh.data_ptr<float>(), packed.data_ptr<float>(), projection(), h0.data_ptr<float>(),
            out.data_ptr<float>(), h_ptr(), mask_ptr(), T, B, H, team_size(), fused_input()};
  }
  FusedInput fused_input() const {
    return fuse ? FusedInput{{x.data_ptr<float>(), x.stride(0), x.stride(1)}, w_ih.data_ptr<float>(),
                             packed_ih.data_ptr<float>(), I}
                : FusedInput{};
  }
  float* h_ptr() const { return mask.defined() ? h.data_ptr<float>() : nullptr; }
  const bool* mask_ptr() const { return mask.defined() ? mask.data_ptr<bool>() : nullptr; }
  Tensor h_last() const { return T == 0 ? h0.clone() : mask.defined() ? h[T & 1].clone() : out[T - 1].clone(); }
};

inline InferBuffers infer_buffers(const char* name, int64_t NG, const Tensor& x, const Tensor& h0,
                                  const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& mask,
                                  const c10::optional<bool>& fused) {
  InferBuffers q;
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(1);
  q.T = T, q.B = B, q.I = I, q.H = H;
  q.isa = infer_run_isa(H);
  TORCH_CHECK(!q.isa.empty(), name, ": the inference loop does not run here for ", H, " units (it needs "
              "AVX2+FMA and a multiple of 8 units)");
  TORCH_CHECK(x.dim() == 3 && w_ih.sizes() == at::IntArrayRef({NG * H, I}) &&
              w_hh.sizes() == at::IntArrayRef({NG * H, H}) && h0.sizes() == at::IntArrayRef({B, H}) &&
              (!mask || mask->sizes() == at::IntArrayRef({T, B})),
              name, ": expected x (T, B, I), h0 (B, H), w_ih (", NG, "H, I), w_hh (", NG, "H, H) and mask (T, B); "
              "got x ", x.sizes(), ", h0 ", h0.sizes(), ", w_ih ", w_ih.sizes(), ", w_hh ", w_hh.sizes());
  TORCH_CHECK(I > 0, name, ": expected at least 1 input feature, got x ", x.sizes());
  for (const Tensor& t : {x, h0, w_ih, w_hh})
    TORCH_CHECK(t.scalar_type() == at::kFloat, name, ": float32 only, got ", t.scalar_type());
  const auto opt = x.options();
  q.fuse = fused.value_or(fuse_input(B, I, H));
  q.w_ih = w_ih.contiguous(), q.w_hh = w_hh.contiguous(), q.h0 = h0.contiguous();
  // A batch-first input arrives as the (T, B, I) transposed view of a (B, T, I) tensor: the tiles
  // read each x_t row where it lies, and the GEMM takes the (B·T, I) matrix as it is, writing
  // batch-major rows; no copy into time-major order either way.
  const bool batch_major = !x.is_contiguous() && x.transpose(0, 1).is_contiguous();
  q.x = (q.fuse && x.stride(2) == 1) || batch_major ? x : x.contiguous();
  if (q.fuse) {
    q.packed_ih = workspace(38, {NG * H * I}, opt);
  } else {
    q.xg = workspace(32, {T * B, NG * H}, opt);
    const Tensor rows = batch_major ? q.x.transpose(0, 1).view({B * T, I}) : q.x.view({T * B, I});
    gemm(q.xg, rows, q.w_ih.t(), false);                     // the input projection
    q.xg_st = (batch_major ? 1 : B) * NG * H;
    q.xg_sb = (batch_major ? T : 1) * NG * H;
  }
  q.packed = workspace(34, {NG * H * H}, opt);
  q.out = at::empty({T, B, H}, opt);
  if (mask) {
    q.h = workspace(35, {2, B, H}, opt);
    q.mask = mask->to(at::kBool).contiguous();
  }
  return q;
}

// Forward without saving anything for backward (no gradient to come), row-major: x (T, B, I),
// h0 / c0 (B, H), w_ih (4H, I), w_hh (4H, H), bias (4H) = b_ih + b_hh or undefined; float32; mask
// (T, B) bool or undefined, as the row-major loop's. Returns {out (T, B, H), h_T, c_T (B, H)}, new
// tensors (out is not a workspace: it is the caller's). fused: the input projection in the tiles
// (true) or a GEMM first (false); unset, fuse_input decides.
inline std::vector<Tensor> lstm_infer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                      const Tensor& w_hh, const c10::optional<Tensor>& bias,
                                      const c10::optional<Tensor>& mask,
                                      const c10::optional<bool>& fused = c10::nullopt) {
  const InferBuffers q = infer_buffers("lstm_infer", 4, x, h0, w_ih, w_hh, mask, fused);
  const int64_t B = q.B, H = q.H;
  TORCH_CHECK(c0.sizes() == at::IntArrayRef({B, H}) && c0.scalar_type() == at::kFloat &&
              (!bias || bias->sizes() == at::IntArrayRef({4 * H})),
              "lstm_infer: expected c0 (B, H) float32 and bias (4H); got c0 ", c0.sizes());
  Tensor c = workspace(33, {2, B, H}, x.options());
  Tensor c0c = c0.contiguous();
  Tensor b = bias ? bias->contiguous() : Tensor();
  InferArgs a{q.loop(), b.defined() ? b.data_ptr<float>() : nullptr, c0c.data_ptr<float>(), c.data_ptr<float>()};
#ifdef RNNLAB_TILED_X86
  if (q.isa == "avx512") avx512::infer(a);
  else avx2::infer(a);
#endif
  Tensor c_last = q.T > 0 ? c[q.T & 1].clone() : c0c.clone();
  return {q.out, q.h_last(), c_last};
}

// The GRU's inference loop (gru_loops.h), under the LSTM's rules: the same vectors over units, the
// same size rule (infer_isa_for; W_hh is 3H·H floats here, so it errs towards the other loops) and
// the same choice of where W_ih x_t is formed (fuse_input). x (T, B, I), h0 (B, H), w_ih (3H, I),
// w_hh (3H, H), b_ih / b_hh (3H) or undefined, mask (T, B) bool or undefined; float32. Returns
// {out (T, B, H), h_T}.
inline std::vector<Tensor> gru_infer(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                     const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh,
                                     const c10::optional<Tensor>& mask,
                                     const c10::optional<bool>& fused = c10::nullopt) {
  const InferBuffers q = infer_buffers("gru_infer", 3, x, h0, w_ih, w_hh, mask, fused);
  const int64_t H = q.H;
  TORCH_CHECK((!b_ih || b_ih->sizes() == at::IntArrayRef({3 * H})) &&
              (!b_hh || b_hh->sizes() == at::IntArrayRef({3 * H})), "gru_infer: expected b_ih and b_hh (3H)");
  Tensor bi = b_ih ? b_ih->contiguous() : at::zeros({3 * H}, x.options());
  Tensor bh = b_hh ? b_hh->contiguous() : at::zeros({3 * H}, x.options());
  GruInferArgs a{q.loop(), bi.data_ptr<float>(), bh.data_ptr<float>()};
#ifdef RNNLAB_TILED_X86
  if (q.isa == "avx512") avx512::gru_infer(a);
  else avx2::gru_infer(a);
#endif
  return {q.out, q.h_last()};
}

// The vanilla RNN's inference loop (rnn_loops.h), as gru_infer: x (T, B, I), h0 (B, H), w_ih (H, I),
// w_hh (H, H), b_ih / b_hh (H) or undefined, relu (else tanh), mask (T, B) bool or undefined;
// float32. Returns {out (T, B, H), h_T}.
inline std::vector<Tensor> rnn_infer(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                     const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool relu,
                                     const c10::optional<Tensor>& mask,
                                     const c10::optional<bool>& fused = c10::nullopt) {
  const InferBuffers q = infer_buffers("rnn_infer", 1, x, h0, w_ih, w_hh, mask, fused);
  const int64_t H = q.H;
  TORCH_CHECK((!b_ih || b_ih->sizes() == at::IntArrayRef({H})) && (!b_hh || b_hh->sizes() == at::IntArrayRef({H})),
              "rnn_infer: expected b_ih and b_hh (H)");
  Tensor b = b_ih && b_hh ? (*b_ih + *b_hh).contiguous() : b_ih ? b_ih->contiguous() : b_hh ? b_hh->contiguous() : Tensor();
  RnnInferArgs a{q.loop(), b.defined() ? b.data_ptr<float>() : nullptr, relu};
#ifdef RNNLAB_TILED_X86
  if (q.isa == "avx512") avx512::rnn_infer(a);
  else avx2::rnn_infer(a);
#endif
  return {q.out, q.h_last()};
}

// The GRU's training forward on its row-major loop's buffers with the inference loop's tiles
// (gru_loops.h's gru_rows_forward), where rows_isa_for says (the LSTM's rule); backward stays the
// library loop's. gates (T, B, 3H): W_ih x_t (+ b_ih where b_ih is undefined) on entry, r, z, n on
// return; hn (T, B, H) out; hs (T+1, B, H) with h_0 in row 0; b_hh and b_ih (3H) or undefined;
// mask (T, B) bool or undefined. All float32 and contiguous.
inline void gru_rows_forward(const std::string& isa, const Tensor& gates, const Tensor& hn, const Tensor& hs,
                             const Tensor& w_hh, const c10::optional<Tensor>& b_hh,
                             const c10::optional<Tensor>& mask, const c10::optional<Tensor>& b_ih = c10::nullopt) {
  const int64_t T = gates.size(0), B = gates.size(1), H = w_hh.size(1);
  Tensor packed = workspace(36, {3 * H * H}, gates.options());
  Tensor w = w_hh.contiguous();
  Tensor bh = b_hh ? b_hh->contiguous() : at::zeros({3 * H}, gates.options());
  Tensor bi = b_ih ? b_ih->contiguous() : Tensor();
  GruRowsArgs a{w.data_ptr<float>(), packed.data_ptr<float>(), gates.data_ptr<float>(), hn.data_ptr<float>(),
                hs.data_ptr<float>(), bh.data_ptr<float>(), mask ? mask->data_ptr<bool>() : nullptr, T, B, H,
                team_size(), bi.defined() ? bi.data_ptr<float>() : nullptr};
#ifdef RNNLAB_TILED_X86
  if (isa == "avx512") avx512::gru_rows_forward(a);
  else avx2::gru_rows_forward(a);
#endif
}

// The vanilla RNN's training forward on its row-major loop's buffer with the inference loop's
// tiles, where rows_isa_for says (the LSTM's rule); backward stays the library loop's. xw (T, B,
// H): W_ih x_t (+ b_ih + b_hh where bias is undefined); hs (T+1, B, H) with h_0 in row 0, h_1..h_T
// on return (carried past each sequence's end under a mask, as the library loop); bias (H) or
// undefined. Float32, contiguous.
inline void rnn_rows_forward(const std::string& isa, const Tensor& xw, const Tensor& hs, const Tensor& w_hh,
                             bool relu, const c10::optional<Tensor>& mask,
                             const c10::optional<Tensor>& bias = c10::nullopt) {
  const int64_t T = xw.size(0), B = xw.size(1), H = w_hh.size(1);
  Tensor packed = workspace(36, {H * H}, xw.options());
  Tensor w = w_hh.contiguous();
  Tensor b = bias ? bias->contiguous() : Tensor();
  float* h = hs.data_ptr<float>();
  const InferLoop loop{w.data_ptr<float>(), packed.data_ptr<float>(), StepRows{xw.data_ptr<float>(), B * H, H}, h,
                       h + B * H, nullptr, mask ? mask->data_ptr<bool>() : nullptr, T, B, H, team_size(), FusedInput{}};
  RnnInferArgs a{loop, b.defined() ? b.data_ptr<float>() : nullptr, relu, true};
#ifdef RNNLAB_TILED_X86
  if (isa == "avx512") avx512::rnn_infer(a);
  else avx2::rnn_infer(a);
#endif
}

// The row-major training loop (rows_forward / rows_backward in lstm_tiled_loops.h): the row-major
// loop's saved layout with the inference loop's tiles in place of a library GEMM and a pointwise
// pass per step. fast_kernels.cpp's lstm_forward / lstm_backward take it (float32) where
// rows_isa_for says: under set_tiled's "auto" (a forced instruction set keeps the tiled loop, "off"
// the library loop), H a multiple of the vector width, and T·B ≥ H² / 8192 sequence-steps to repay
// packing W_hh in each pass (as the inference loop). Vectors over units are full at any batch and
// need no padding or transposes; benchmarks/bench_kernels.py --rows measures it against the tiled
// loop over hidden sizes and batches.
inline std::string rows_isa_for(int64_t B, int64_t H, int64_t T) {
  return choice() == "auto" && packing_pays(B, H, T) ? infer_isa(H) : std::string();
}

// gates (T, B, 4H): W_ih x_t (+ b where bias is undefined) on entry, the gates on return; hs / cs
// (T+1, B, H) with h_0 / c_0 in row 0; tcs (T, B, H); mask (T, B) bool or undefined; bias (4H) or
// undefined. All float32 and contiguous.
inline void rows_forward(const std::string& isa, const Tensor& gates, const Tensor& hs, const Tensor& cs,
                         const Tensor& tcs, const Tensor& w_hh, const c10::optional<Tensor>& mask,
                         const c10::optional<Tensor>& bias = c10::nullopt) {
  const int64_t T = gates.size(0), B = gates.size(1), H = w_hh.size(1);
  Tensor packed = workspace(36, {4 * H * H}, gates.options());
  Tensor w = w_hh.contiguous();
  RowFwdArgs a{w.data_ptr<float>(), packed.data_ptr<float>(), gates.data_ptr<float>(), hs.data_ptr<float>(),
               cs.data_ptr<float>(), tcs.data_ptr<float>(), mask ? mask->data_ptr<bool>() : nullptr, T, B, H,
               team_size(), bias ? bias->data_ptr<float>() : nullptr};
#ifdef RNNLAB_TILED_X86
  if (isa == "avx512") avx512::rows_forward(a);
  else avx2::rows_forward(a);
#endif
}

// Backward of rows_forward (or of the row-major loop: the same buffers). d_out (T, B, H); da (T, B,
// 4H) out; dh / dc (B, H): ∂L/∂h_T, ∂L/∂c_T on entry, ∂L/∂h_0, ∂L/∂c_0 on return.
inline void rows_backward(const std::string& isa, const Tensor& d_out, const Tensor& gates, const Tensor& cs,
                          const Tensor& tcs, const Tensor& w_hh, const c10::optional<Tensor>& mask, const Tensor& da,
                          const Tensor& dh, const Tensor& dc) {
  const int64_t T = gates.size(0), B = gates.size(1), H = w_hh.size(1);
  Tensor packed = workspace(37, {4 * H * H}, gates.options());
  Tensor w = w_hh.contiguous();
  RowBwdArgs a{w.data_ptr<float>(), packed.data_ptr<float>(), gates.data_ptr<float>(), cs.data_ptr<float>(),
               tcs.data_ptr<float>(), d_out.data_ptr<float>(), da.data_ptr<float>(), dh.data_ptr<float>(),
               dc.data_ptr<float>(), mask ? mask->data_ptr<bool>() : nullptr, T, B, H, team_size()};
#ifdef RNNLAB_TILED_X86
  if (isa == "avx512") avx512::rows_backward(a);
  else avx2::rows_backward(a);
#endif
}

// Backward of lstm_forward and lstm_forward_padded. d_out (T, B, H), dh_last / dc_last (B, H). Returns {da (4H, T, Bp),
// dh_0 (B, H), dc_0 (B, H)} and, when `record`, {‖∂L/∂h_t‖, ‖∂L/∂c_t‖} (T, B) as well.
inline std::vector<Tensor> lstm_backward(const Tensor& d_out, const Tensor& dh_last, const Tensor& dc_last,
                                         const Tensor& gates, const Tensor& cs, const Tensor& tcs,
                                         const Tensor& w_hh, bool record) {
  const int64_t T = d_out.size(0), B = d_out.size(1), H = w_hh.size(1), Bp = gates.size(2);
  const auto opt = gates.options();
  Tensor dout = workspace(27, {T, H, Bp}, opt);
  if (Bp != B) dout.narrow(2, B, Bp - B).zero_();
  dout.narrow(2, 0, B).copy_(d_out.permute({0, 2, 1}));
  Tensor da = workspace(28, {4 * H, T, Bp}, opt);
  Tensor packed = workspace(29, {4 * H * H}, opt);
  Tensor dh = at::empty({H, Bp}, opt), dc = at::empty({H, Bp}, opt);
  to_unit_major(dh_last, dh);
  to_unit_major(dc_last, dc);
  const int threads = team_size();
  Tensor rec_h, rec_c;
  if (record) {
    rec_h = at::zeros({T, threads, Bp}, opt);
    rec_c = at::zeros({T, threads, Bp}, opt);
  }
  BwdArgs a{w_hh.data_ptr<float>(), packed.data_ptr<float>(), gates.data_ptr<float>(), cs.data_ptr<float>(),
            tcs.data_ptr<float>(), dout.data_ptr<float>(), da.data_ptr<float>(), dh.data_ptr<float>(),
            dc.data_ptr<float>(), record ? rec_h.data_ptr<float>() : nullptr,
            record ? rec_c.data_ptr<float>() : nullptr, T, H, Bp, threads};
#ifdef RNNLAB_TILED_X86
  // The forward's choice for this batch, unless the choice changed since and its vectors no longer
  // fit the saved padding: then AVX2's 8 columns (every padding is a multiple of 8).
  if (isa_for(B) == "avx512" && Bp % 16 == 0) avx512::backward(a);
  else avx2::backward(a);
#endif
  std::vector<Tensor> out{da, dh.narrow(1, 0, B).t().contiguous(), dc.narrow(1, 0, B).t().contiguous()};
  if (record) {
    out.push_back(rec_h.sum(1).narrow(1, 0, B).sqrt());
    out.push_back(rec_c.sum(1).narrow(1, 0, B).sqrt());
  }
  return out;
}

}  // namespace rnnlab::tiled
