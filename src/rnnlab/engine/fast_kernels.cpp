// rnnlab fast path: the time loops of rnnlab.engine.scan in C++, with fused pointwise steps.
//
// Same equations, same saved buffers and the same hand-written backward as the reference
// (src/rnnlab/cells/{rnn,lstm,gru}.py, whose docstrings hold the derivations); what changes is
// only *how* a step runs: no Python between steps, the recurrent matmul written straight into the
// preallocated buffer (rnnlab::gemm, gemm.h: oneDNN's GEMM where it pays, else torch's BLAS), the
// transcendental activations by ATen's vectorised kernels, and everything else of a step in one
// pass over memory.
//
// Buffers (all contiguous; G = gate blocks, P = H here, the projection is left to the reference):
//   xw     (T, B, G·H)   input projection W_ih x_t, from the Python side (the forwards add the input
//                        bias given apart as they read it); the forward overwrites it with the gates
//                        (it is not needed afterwards)
//   hs     (T+1, B, H)   h_0..h_T           cs (T+1, B, H)  LSTM c_0..c_T
//   tcs    (T, B, H)     LSTM tanh(c_t) (the reference recomputes it in backward; saved here)
//   gates  (T, B, G·H)   post-activation gates (LSTM i|f|g|o, GRU r|z|n)
//   hn     (T, B, H)     GRU W_hn h_{t-1} + b_hn
//   mask   (T, B) bool or undefined: invalid steps carry the state; backward is the identity there.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "gemm.h"
#include "lstm_tiled.h"
#include "workspace.h"

using at::Tensor;
using rnnlab::gemm;
using rnnlab::workspace;
using rnnlab::use_onednn;

namespace {

// Rows b where the step is invalid keep the previous state (forward).
template <typename T>
void carry_rows(const bool* m, T* cur, const T* prev, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b)
    if (!m[b]) std::copy(prev + b * H, prev + (b + 1) * H, cur + b * H);
}

template <typename T>
void row_norms(const T* v, T* out, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t j = 0; j < H; ++j) s += double(v[b * H + j]) * double(v[b * H + j]);
    out[b] = T(std::sqrt(s));
  }
}

// ------------------------------------------------------------------------------------- LSTM
// The row-major loop. For float32 without a mask, batches of 4 or more take the unit-major loop
// of lstm_tiled.h instead (dispatch.py's plan decides); this one serves float64, masks and small batches.
// tanh(x) = 2σ(2x) − 1: ATen's vectorised sigmoid is faster than its tanh on CPU, so the
// g gate and tanh(c_t) go through one sigmoid each (equal to tanh up to rounding, ~1 ulp of 1).
// Threads split each step by batch rows: a thread owns rows [b0, b1), computes their part of the
// recurrent matmul (one GEMM on a contiguous row block), their cell update, and in backward their
// gate gradients and their rows of dh_{t-1} = da W_hh, needing nothing from the other rows; the
// step ends at the join. (One BLAS call per step cannot use the second core at these sizes: at
// B = 32 the GEMM is too small for the library to split.) Inside the region ATen runs serially.
// Where the step's GEMM goes to oneDNN (use_onednn: large enough, float32), oneDNN splits it
// across the threads better than rows do, so it runs once for the whole batch before the region
// (forward) or after it (backward), and the region keeps only the pointwise work.
constexpr int64_t kRowGrain = 8;

// `rows`: the instruction set of the row-major training loop (lstm_tiled.h's rows_forward), which
// then runs the steps in place of the library GEMM and pointwise passes below, or "" for those.
std::vector<Tensor> lstm_forward_on(const std::string& rows, const Tensor& xw, const Tensor& h0, const Tensor& c0,
                                    const Tensor& w_hh, const c10::optional<Tensor>& mask,
                                    const c10::optional<Tensor>& bias) {
  const int64_t T = xw.size(0), B = xw.size(1), G = xw.size(2), H = G / 4;
  auto hs = workspace(0, {T + 1, B, H}, xw.options());            // reused buffers: workspace.h
  auto cs = workspace(1, {T + 1, B, H}, xw.options());
  auto tcs = workspace(2, {T, B, H}, xw.options());   // tanh(c_t), saved so backward needs no tanh
  Tensor gates = xw;  // the gates overwrite the input projection in place: no copy, no extra buffer
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  if (!rows.empty()) {
    TORCH_CHECK(xw.scalar_type() == at::kFloat && xw.is_contiguous(), "lstm_forward: the row-major training "
                "loop takes a contiguous float32 projection");
    TORCH_CHECK(w_hh.sizes() == at::IntArrayRef({G, H}) && (!mask || mask->sizes() == at::IntArrayRef({T, B})),
                "lstm_forward: expected w_hh (4H, H) and mask (T, B) for xw ", xw.sizes(), "; got w_hh ",
                w_hh.sizes());
    TORCH_CHECK(!bias || (bias->scalar_type() == at::kFloat && bias->sizes() == at::IntArrayRef({G})),
                "lstm_forward: expected a float32 bias (4H), got ", bias ? bias->sizes() : at::IntArrayRef{});
    rnnlab::tiled::rows_forward(rows, gates, hs, cs, tcs, w_hh,
                                mask ? c10::optional<Tensor>(mask->contiguous()) : c10::nullopt,
                                bias ? c10::optional<Tensor>(bias->contiguous()) : c10::nullopt);
    return {hs, cs, gates, tcs};
  }
  if (bias) gates.add_(*bias);                      // the library loop reads W_ih x_t + b
  const Tensor w_hh_t = w_hh.t();                   // (H, 4H)
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_forward", [&] {
    const scalar_t one = 1, two = 2;
    const bool whole = T > 0 && use_onednn(hs[0], w_hh_t);   // one GEMM per step, outside the region
    for (int64_t t = 0; t < T; ++t) {
      Tensor g_t = gates[t], h_prev = hs[t], tc_t = tcs[t];
      if (whole) gemm(g_t, h_prev, w_hh_t, true);            // pre-activations of all four gates
      scalar_t* gp = g_t.data_ptr<scalar_t>();
      scalar_t* hp = h_prev.data_ptr<scalar_t>();
      scalar_t* cp = cs[t].data_ptr<scalar_t>();
      scalar_t* cn = cs[t + 1].data_ptr<scalar_t>();
      scalar_t* tc = tc_t.data_ptr<scalar_t>();
      scalar_t* hn = hs[t + 1].data_ptr<scalar_t>();
      const bool* m = mask ? (*mask)[t].data_ptr<bool>() : nullptr;
      at::parallel_for(0, B, kRowGrain, [&](int64_t b0, int64_t b1) {
        at::NoGradGuard no_grad;                          // worker threads start with grad mode on
        const int64_t n = b1 - b0;
        Tensor g_rows = g_t.narrow(0, b0, n);
        if (!whole) g_rows.addmm_(h_prev.narrow(0, b0, n), w_hh_t);   // the same, these rows
        for (int64_t b = b0; b < b1; ++b)                 // g block: a -> 2a, for tanh(a) = 2σ(2a) − 1
          for (int64_t j = 2 * H; j < 3 * H; ++j) gp[b * G + j] *= two;
        g_rows.sigmoid_();                                // i, f, o = σ(a); g block = σ(2a)
        for (int64_t b = b0; b < b1; ++b) {
          scalar_t* r = gp + b * G;
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t g = two * r[2 * H + j] - one;  // g_t = tanh(a_g)
            r[2 * H + j] = g;
            const scalar_t c = r[H + j] * cp[b * H + j] + r[j] * g;  // c_t = f ⊙ c_{t-1} + i ⊙ g
            cn[b * H + j] = c;
            tc[b * H + j] = two * c;
          }
        }
        tc_t.narrow(0, b0, n).sigmoid_();
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t th = two * tc[b * H + j] - one;  // tanh(c_t)
            tc[b * H + j] = th;
            hn[b * H + j] = gp[b * G + 3 * H + j] * th;     // h_t = o ⊙ tanh(c_t)
          }
        if (m) {
          carry_rows(m + b0, hn + b0 * H, hp + b0 * H, n, H);
          carry_rows(m + b0, cn + b0 * H, cp + b0 * H, n, H);
        }
      });
    }
  });
  return {hs, cs, gates, tcs};
}

// The row-major training loop where lstm_tiled.h's rows_isa_for takes it, else the loop above.
// bias: b_ih + b_hh when xw is W_ih x_t alone (the row-major training loop adds it as it reads xw,
// sparing a pass that fills the projection's buffer with the bias first), or undefined.
std::vector<Tensor> lstm_forward(const Tensor& xw, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_hh, const c10::optional<Tensor>& mask,
                                 const c10::optional<Tensor>& bias) {
  const bool f32 = xw.scalar_type() == at::kFloat && xw.is_contiguous();
  const std::string rows = f32 ? rnnlab::tiled::rows_isa_for(xw.size(1), w_hh.size(1), xw.size(0)) : std::string();
  return lstm_forward_on(rows, xw, h0, c0, w_hh, mask, bias);
}

// Returns {dxw (T, B, 4H), dh_0, dc_0}. rec_h / rec_c (T, B), when defined, receive ‖dh_t‖ and
// ‖dc_t‖ exactly where the reference records them.
// `rows`: as lstm_forward_on's (not with rec_h / rec_c: the row-major training loop keeps no record).
std::vector<Tensor> lstm_backward_on(const std::string& rows, const Tensor& d_out, const Tensor& dh_last,
                                     const Tensor& dc_last, const Tensor& gates, const Tensor& cs, const Tensor& tcs,
                                     const Tensor& w_hh, const c10::optional<Tensor>& mask,
                                     const c10::optional<Tensor>& rec_h, const c10::optional<Tensor>& rec_c) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
  auto dxw = workspace(3, {T, B, G}, gates.options());
  Tensor dh = dh_last.clone(at::MemoryFormat::Contiguous);
  Tensor dc = dc_last.clone(at::MemoryFormat::Contiguous);
  if (!rows.empty()) {
    TORCH_CHECK(!rec_h && !rec_c, "lstm_backward: the row-major training loop keeps no gradient record");
    TORCH_CHECK(gates.scalar_type() == at::kFloat && gates.is_contiguous() && cs.is_contiguous() &&
                tcs.is_contiguous(), "lstm_backward: the row-major training loop takes contiguous float32 buffers");
    TORCH_CHECK(w_hh.sizes() == at::IntArrayRef({G, H}) && cs.sizes() == at::IntArrayRef({T + 1, B, H}) &&
                tcs.sizes() == at::IntArrayRef({T, B, H}) && d_out.sizes() == at::IntArrayRef({T, B, H}) &&
                dh.sizes() == at::IntArrayRef({B, H}) && dc.sizes() == at::IntArrayRef({B, H}) &&
                (!mask || mask->sizes() == at::IntArrayRef({T, B})),
                "lstm_backward: expected w_hh (4H, H), cs (T+1, B, H), tcs, d_out (T, B, H), dh, dc (B, H) and "
                "mask (T, B) for gates ", gates.sizes());
    rnnlab::tiled::rows_backward(rows, d_out.contiguous(), gates, cs, tcs, w_hh,
                                 mask ? c10::optional<Tensor>(mask->contiguous()) : c10::nullopt, dxw, dh, dc);
    return {dxw, dh, dc};
  }
  Tensor dh_prev = at::empty({B, H}, gates.options());
  Tensor dc_total = at::empty({B, H}, gates.options());   // kept only for the record
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    scalar_t* dcp = dc.data_ptr<scalar_t>();
    scalar_t* dctp = dc_total.data_ptr<scalar_t>();
    const scalar_t* dpp = dh_prev.data_ptr<scalar_t>();
    const bool whole = T > 0 && use_onednn(dxw[0], w_hh);    // one GEMM per step, after the region
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* dop = d_out[t].data_ptr<scalar_t>();
      const bool* m = mask ? (*mask)[t].data_ptr<bool>() : nullptr;
      const scalar_t* tc = tcs[t].data_ptr<scalar_t>();  // tanh(c_t), saved by the forward
      const scalar_t* gp = gates[t].data_ptr<scalar_t>();
      const scalar_t* cp = cs[t].data_ptr<scalar_t>();
      Tensor da_t = dxw[t];
      scalar_t* da = da_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, kRowGrain, [&](int64_t b0, int64_t b1) {
        at::NoGradGuard no_grad;                          // worker threads start with grad mode on
        const int64_t n = b1 - b0;
        for (int64_t k = b0 * H; k < b1 * H; ++k) dhp[k] += dop[k];    // total ∂L/∂h_t
        if (rec_h) row_norms(dhp + b0 * H, (*rec_h)[t].data_ptr<scalar_t>() + b0, n, H);
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* r = gp + b * G;
          scalar_t* d = da + b * G;
          const bool valid = m == nullptr || m[b];
          for (int64_t j = 0; j < H; ++j) {
            const int64_t k = b * H + j;
            const scalar_t i = r[j], f = r[H + j], g = r[2 * H + j], o = r[3 * H + j];
            const scalar_t dh_k = valid ? dhp[k] : scalar_t(0);
            const scalar_t dc_k = valid ? dcp[k] : scalar_t(0);
            const scalar_t th = tc[k];
            const scalar_t dct = dc_k + dh_k * o * (scalar_t(1) - th * th);  // dc_total
            d[3 * H + j] = dh_k * th * o * (scalar_t(1) - o);                // do
            d[j] = dct * g * i * (scalar_t(1) - i);                          // di
            d[H + j] = dct * cp[k] * f * (scalar_t(1) - f);                  // df
            d[2 * H + j] = dct * i * (scalar_t(1) - g * g);                  // dg
            // dc_{t-1} = dc_total ⊙ f, or dc itself past the end of the sequence
            dcp[k] = valid ? dct * f : dcp[k];
            dctp[k] = dct;
          }
        }
        if (rec_c) row_norms(dctp + b0 * H, (*rec_c)[t].data_ptr<scalar_t>() + b0, n, H);
        if (whole) return;
        Tensor out = dh_prev.narrow(0, b0, n);
        at::mm_out(out, da_t.narrow(0, b0, n), w_hh);                     // dh_{t-1} = da W_hh
        for (int64_t b = b0; b < b1; ++b)
          if (m == nullptr || m[b]) std::copy(dpp + b * H, dpp + (b + 1) * H, dhp + b * H);
      });
      if (whole) {                                                        // dh_{t-1} = da W_hh
        if (m == nullptr) {
          gemm(dh, da_t, w_hh, false);                                    // dh_t is consumed: overwrite
        } else {
          gemm(dh_prev, da_t, w_hh, false);
          for (int64_t b = 0; b < B; ++b)
            if (m[b]) std::copy(dpp + b * H, dpp + (b + 1) * H, dhp + b * H);
        }
      }
    }
  });
  return {dxw, dh, dc};
}

std::vector<Tensor> lstm_backward(const Tensor& d_out, const Tensor& dh_last, const Tensor& dc_last,
                                  const Tensor& gates, const Tensor& cs, const Tensor& tcs, const Tensor& w_hh,
                                  const c10::optional<Tensor>& mask, const c10::optional<Tensor>& rec_h,
                                  const c10::optional<Tensor>& rec_c) {
  const bool f32 = gates.scalar_type() == at::kFloat && gates.is_contiguous() && cs.is_contiguous() &&
                   tcs.is_contiguous() && !rec_h && !rec_c;
  const std::string rows = f32 ? rnnlab::tiled::rows_isa_for(gates.size(1), w_hh.size(1), gates.size(0))
                               : std::string();
  return lstm_backward_on(rows, d_out, dh_last, dc_last, gates, cs, tcs, w_hh, mask, rec_h, rec_c);
}

// The row-major training loop whatever the batch (for tests and benchmarks): where it runs for H
// units at all (lstm_tiled.h's infer_run_isa), else an error.
std::string rows_isa_or_fail(const Tensor& t, int64_t H) {
  const std::string isa = rnnlab::tiled::infer_run_isa(H);
  TORCH_CHECK(!isa.empty(), "the row-major training loop does not run here for ", H, " units (it needs AVX2+FMA "
              "and a multiple of 8 units)");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "the row-major training loop: float32 only, got ", t.scalar_type());
  return isa;
}

// -------------------------------------------------------------------------------------- GRU
// `rows`: the instruction set of the GRU's row-major SIMD forward (lstm_tiled.h's
// gru_rows_forward), or "" for the library loop below.
// b_ih: given apart from xw (W_ih x_t alone), the SIMD loop adds it in its tiles, the library loop
// in one add; undefined when xw holds it already.
std::vector<Tensor> gru_forward_on(const std::string& rows, const Tensor& xw, const Tensor& h0, const Tensor& w_hh,
                                   const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& mask,
                                   const c10::optional<Tensor>& b_ih) {
  const int64_t T = xw.size(0), B = xw.size(1), G = xw.size(2), H = G / 3;
  auto hs = workspace(4, {T + 1, B, H}, xw.options());
  Tensor gates = xw;  // computed in place over the input projection (each element reads its own)
  auto hn = workspace(5, {T, B, H}, xw.options());
  hs[0].copy_(h0);
  if (!rows.empty()) {
    TORCH_CHECK(xw.scalar_type() == at::kFloat && xw.is_contiguous() && w_hh.sizes() == at::IntArrayRef({G, H}) &&
                (!b_hh || b_hh->sizes() == at::IntArrayRef({G})) &&
                (!b_ih || (b_ih->sizes() == at::IntArrayRef({G}) && b_ih->scalar_type() == at::kFloat)) &&
                (!mask || mask->sizes() == at::IntArrayRef({T, B})),
                "gru_forward: the row-major SIMD loop takes a contiguous float32 xw (T, B, 3H), w_hh (3H, H), "
                "b_hh and float32 b_ih (3H) and mask (T, B); got xw ", xw.sizes(), ", w_hh ", w_hh.sizes());
    rnnlab::tiled::gru_rows_forward(rows, gates, hn, hs, w_hh, b_hh,
                                    mask ? c10::optional<Tensor>(mask->contiguous()) : c10::nullopt, b_ih);
    return {hs, gates, hn};
  }
  auto hw = at::empty({B, G}, xw.options());
  const Tensor w_hh_t = w_hh.t();
  const Tensor bi_c = b_ih ? b_ih->contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "gru_forward", [&] {
    const scalar_t* bi = bi_c.defined() ? bi_c.data_ptr<scalar_t>() : nullptr;   // b_ih, added as xw is read
    for (int64_t t = 0; t < T; ++t) {
      if (b_hh) hw.copy_(b_hh->expand({B, G}));
      gemm(hw, hs[t], w_hh_t, b_hh.has_value());          // W_hh h_{t-1} + b_hh
      Tensor g_t = gates[t];
      const scalar_t* xp = g_t.data_ptr<scalar_t>();     // == xw[t], read before written
      const scalar_t* hwp = hw.data_ptr<scalar_t>();
      scalar_t* gp = g_t.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < 2 * H; ++j) gp[b * G + j] = xp[b * G + j] + (bi ? bi[j] : scalar_t(0)) + hwp[b * G + j];
      g_t.narrow(1, 0, 2 * H).sigmoid_();                             // r, z
      scalar_t* hnp = hn[t].data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t hn_k = hwp[b * G + 2 * H + j];
          hnp[b * H + j] = hn_k;                                       // hn = W_hn h + b_hn
          gp[b * G + 2 * H + j] = xp[b * G + 2 * H + j] + (bi ? bi[2 * H + j] : scalar_t(0)) + gp[b * G + j] * hn_k;
        }
      g_t.narrow(1, 2 * H, H).tanh_();                                // n
      const scalar_t* hp = hs[t].data_ptr<scalar_t>();
      scalar_t* ho = hs[t + 1].data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {                              // h = n + z ⊙ (h_{t-1} − n)
          const scalar_t z = gp[b * G + H + j], n = gp[b * G + 2 * H + j];
          ho[b * H + j] = (hp[b * H + j] - n) * z + n;
        }
      if (mask) carry_rows((*mask)[t].data_ptr<bool>(), ho, hp, B, H);
    }
  });
  return {hs, gates, hn};
}

// The GRU's row-major SIMD forward where the LSTM's rule (rows_isa_for) takes it, else the library loop.
std::vector<Tensor> gru_forward(const Tensor& xw, const Tensor& h0, const Tensor& w_hh,
                                const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& mask,
                                const c10::optional<Tensor>& b_ih) {
  const bool f32 = xw.scalar_type() == at::kFloat && xw.is_contiguous();
  const std::string rows = f32 ? rnnlab::tiled::rows_isa_for(xw.size(1), w_hh.size(1), xw.size(0)) : std::string();
  return gru_forward_on(rows, xw, h0, w_hh, b_hh, mask, b_ih);
}

// Returns {dxw (T, B, 3H), dhw (T, B, 3H), dh_0}.
std::vector<Tensor> gru_backward(const Tensor& d_out, const Tensor& dh_last, const Tensor& gates,
                                 const Tensor& hn, const Tensor& hs, const Tensor& w_hh,
                                 const c10::optional<Tensor>& mask, const c10::optional<Tensor>& rec_h) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 3;
  auto dxw = workspace(6, {T, B, G}, gates.options());
  auto dhw = workspace(7, {T, B, G}, gates.options());
  Tensor dh = dh_last.clone().contiguous();
  Tensor dh_prev = at::empty({B, H}, gates.options());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_backward", [&] {
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* dop = d_out[t].data_ptr<scalar_t>();
      for (int64_t k = 0; k < B * H; ++k) dhp[k] += dop[k];
      if (rec_h) row_norms(dhp, (*rec_h)[t].data_ptr<scalar_t>(), B, H);
      const bool* m = mask ? (*mask)[t].data_ptr<bool>() : nullptr;
      const scalar_t* gp = gates[t].data_ptr<scalar_t>();
      const scalar_t* hnp = hn[t].data_ptr<scalar_t>();
      const scalar_t* hp = hs[t].data_ptr<scalar_t>();
      scalar_t* dx = dxw[t].data_ptr<scalar_t>();
      scalar_t* dhh = dhw[t].data_ptr<scalar_t>();
      scalar_t* dir = dh_prev.data_ptr<scalar_t>();             // the direct path, then += dhw W_hh
      for (int64_t b = 0; b < B; ++b) {
        const bool valid = m == nullptr || m[b];
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j, q = b * G;
          const scalar_t r = gp[q + j], z = gp[q + H + j], n = gp[q + 2 * H + j];
          const scalar_t d = valid ? dhp[k] : scalar_t(0);
          const scalar_t da_n = d * (scalar_t(1) - z) * (scalar_t(1) - n * n);
          const scalar_t da_z = (hp[k] - n) * d * z * (scalar_t(1) - z);
          const scalar_t da_r = da_n * hnp[k] * r * (scalar_t(1) - r);
          dx[q + j] = da_r; dx[q + H + j] = da_z; dx[q + 2 * H + j] = da_n;
          dhh[q + j] = da_r; dhh[q + H + j] = da_z; dhh[q + 2 * H + j] = da_n * r;
          dir[k] = d * z;                                              // direct path z ⊙ dh
        }
      }
      gemm(dh_prev, dhw[t], w_hh, true);                              // dhw W_hh + dh ⊙ z
      const scalar_t* dpp = dh_prev.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        if (m == nullptr || m[b]) std::copy(dpp + b * H, dpp + (b + 1) * H, dhp + b * H);
    }
  });
  return {dxw, dhw, dh};
}

// -------------------------------------------------------------------------------------- RNN
// `rows`: the instruction set of the RNN's row-major SIMD forward (lstm_tiled.h's
// rnn_rows_forward), or "" for the library loop below. bias: b_ih + b_hh given apart from xw (W_ih
// x_t alone), added as either loop reads xw; undefined when xw holds it already.
Tensor rnn_forward_on(const std::string& rows, const Tensor& xw, const Tensor& h0, const Tensor& w_hh, bool relu,
                      const c10::optional<Tensor>& mask, const c10::optional<Tensor>& bias) {
  const int64_t T = xw.size(0), B = xw.size(1), H = xw.size(2);
  auto hs = workspace(8, {T + 1, B, H}, xw.options());
  hs[0].copy_(h0);
  if (!rows.empty()) {
    TORCH_CHECK(xw.scalar_type() == at::kFloat && xw.is_contiguous() && w_hh.sizes() == at::IntArrayRef({H, H}) &&
                (!bias || (bias->sizes() == at::IntArrayRef({H}) && bias->scalar_type() == at::kFloat)) &&
                (!mask || mask->sizes() == at::IntArrayRef({T, B})),
                "rnn_forward: the row-major SIMD loop takes a contiguous float32 xw (T, B, H), w_hh (H, H), bias (H) "
                "and mask (T, B); got xw ", xw.sizes(), ", w_hh ", w_hh.sizes());
    rnnlab::tiled::rnn_rows_forward(rows, xw, hs, w_hh, relu,
                                    mask ? c10::optional<Tensor>(mask->contiguous()) : c10::nullopt, bias);
    return hs;
  }
  const Tensor w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "rnn_forward", [&] {
    for (int64_t t = 0; t < T; ++t) {
      Tensor h = hs[t + 1];
      if (bias) at::add_out(h, xw[t], *bias);
      else h.copy_(xw[t]);
      gemm(h, hs[t], w_hh_t, true);                       // x W_ih^T + b + h_{t-1} W_hh^T
      if (relu) h.relu_(); else h.tanh_();
      if (mask) carry_rows((*mask)[t].data_ptr<bool>(), h.data_ptr<scalar_t>(), hs[t].data_ptr<scalar_t>(), B, H);
    }
  });
  return hs;
}

// The RNN's row-major SIMD forward where the LSTM's rule (rows_isa_for) takes it, else the library loop.
Tensor rnn_forward(const Tensor& xw, const Tensor& h0, const Tensor& w_hh, bool relu,
                   const c10::optional<Tensor>& mask, const c10::optional<Tensor>& bias) {
  const bool f32 = xw.scalar_type() == at::kFloat && xw.is_contiguous();
  const std::string rows = f32 ? rnnlab::tiled::rows_isa_for(xw.size(1), w_hh.size(1), xw.size(0)) : std::string();
  return rnn_forward_on(rows, xw, h0, w_hh, relu, mask, bias);
}

// Returns {da (T, B, H), dh_0}.
std::vector<Tensor> rnn_backward(const Tensor& d_out, const Tensor& dh_last, const Tensor& hs,
                                 const Tensor& w_hh, bool relu, const c10::optional<Tensor>& mask,
                                 const c10::optional<Tensor>& rec_h) {
  const int64_t T = hs.size(0) - 1, B = hs.size(1), H = hs.size(2);
  auto da = workspace(9, {T, B, H}, hs.options());
  Tensor dh = dh_last.clone().contiguous();
  Tensor dh_prev = at::empty({B, H}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "rnn_backward", [&] {
    scalar_t* dhp = dh.data_ptr<scalar_t>();
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* dop = d_out[t].data_ptr<scalar_t>();
      for (int64_t k = 0; k < B * H; ++k) dhp[k] += dop[k];
      if (rec_h) row_norms(dhp, (*rec_h)[t].data_ptr<scalar_t>(), B, H);
      const bool* m = mask ? (*mask)[t].data_ptr<bool>() : nullptr;
      const scalar_t* h = hs[t + 1].data_ptr<scalar_t>();
      scalar_t* d = da[t].data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        const bool valid = m == nullptr || m[b];
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = b * H + j;
          const scalar_t g = valid ? dhp[k] : scalar_t(0);
          d[k] = relu ? (h[k] > 0 ? g : scalar_t(0)) : g * (scalar_t(1) - h[k] * h[k]);
        }
      }
      gemm(dh_prev, da[t], w_hh, false);
      const scalar_t* dpp = dh_prev.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b)
        if (m == nullptr || m[b]) std::copy(dpp + b * H, dpp + (b + 1) * H, dhp + b * H);
    }
  });
  return {da, dh};
}

// ------------------------------------------------------------ batch-1 streaming step (LSTM)
// rnnlab.nn.stream.Stream's step for LSTM stacks without projection: one call per time step for
// the whole stack, state updated in place. A step is a (I + H) × 4H matrix-vector product per
// layer plus 4H activations: tiny arithmetic, so what counts is (1) no per-call overhead beyond
// one Python → C++ call, (2) reading the weights fast: the product's inner loop runs over a
// contiguous block of W^T, compiled twice on x86 (AVX2+FMA where the CPU has it, picked at run
// time, and plain x86-64), and (3) at large H, several threads (torch's count when the Stream
// is made, at least 64 units each), each owning its units' share of the weights, which then stays
// in its core's cache from step to step (at H = 256 a layer's weights are 1.2 MB, more than one L2).
// Columns are unit-major: column 4j + k is gate k (i, f, g, o) of unit j, so a thread's units
// own one contiguous block of every row.
namespace streaming {

// The float loops are compiled twice: for AVX2 with FMA (8 lanes, fused multiply-add) and for
// plain x86-64; the CPU's features pick one once at load time.
// out[0, n) += W^T z for one chunk's columns, z = (x, h) of lengths I and H. The chunk's columns
// are packed in blocks of 64: block b holds rows 0..I+H of columns 64b..64b+63, contiguous, so the
// inner loop reads memory sequentially and the block's 64 sums stay in registers for all rows.
constexpr int64_t kBlock = 64;
#define RNNLAB_MATVEC_BODY                                                   \
  const int64_t K = I + H;                                                 \
  for (int64_t blk = 0; blk * kBlock < n; ++blk) {                         \
    std::remove_reference_t<decltype(out[0])> acc[kBlock] = {};           \
    const auto* __restrict pb = p + blk * K * kBlock;                      \
    for (int64_t k = 0; k < I; ++k) {                                      \
      const auto zk = x[k];                                                \
      for (int64_t j = 0; j < kBlock; ++j) acc[j] += pb[k * kBlock + j] * zk; \
    }                                                                      \
    pb += I * kBlock;                                                      \
    for (int64_t k = 0; k < H; ++k) {                                      \
      const auto zk = h[k];                                                \
      for (int64_t j = 0; j < kBlock; ++j) acc[j] += pb[k * kBlock + j] * zk; \
    }                                                                      \
    const int64_t width = std::min(kBlock, n - blk * kBlock);              \
    for (int64_t j = 0; j < width; ++j) out[blk * kBlock + j] += acc[j];   \
  }

// v[k] ← σ(v[k]) = 1 / (1 + e^{−v[k]}) over a contiguous block. The float version evaluates e^x
// in a form the compiler vectorises (Cody–Waite reduction x = n ln 2 + r, Cephes' degree-6
// polynomial for e^r, 2^n through the exponent bits; within 2 ulp of expf), because libm's scalar
// expf, called 4H times a step, costs more than the whole matrix-vector product.
#define RNNLAB_SIGMOID_BODY                                                  \
  for (int64_t k = 0; k < n; ++k) {                                        \
    const float x = std::min(std::max(-v[k], -87.0f), 88.0f);              \
    const float m = std::floor(x * 1.44269504088896341f + 0.5f);           \
    const float r = x - m * 0.693359375f + m * 2.12194440e-4f;             \
    float p = 1.9875691500e-4f;                                            \
    p = p * r + 1.3981999507e-3f;                                          \
    p = p * r + 8.3334519073e-3f;                                          \
    p = p * r + 4.1665795894e-2f;                                          \
    p = p * r + 1.6666665459e-1f;                                          \
    p = p * r + 5.0000001201e-1f;                                          \
    p = p * r * r + r + 1.0f;                                              \
    const int32_t bits = (int32_t(m) + 127) << 23;                         \
    float scale;                                                           \
    std::memcpy(&scale, &bits, sizeof(scale));                             \
    v[k] = 1.0f / (1.0f + p * scale);                                      \
  }

#define RNNLAB_MATVEC_ARGS(T)                                                \
  const T* __restrict p, const T* __restrict x, int64_t I, const T* __restrict h, int64_t H, \
  T* __restrict out, int64_t n
void matvec_base(RNNLAB_MATVEC_ARGS(float)) { RNNLAB_MATVEC_BODY }
void sigmoid_base(float* __restrict v, int64_t n) { RNNLAB_SIGMOID_BODY }
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void matvec_avx2(RNNLAB_MATVEC_ARGS(float)) { RNNLAB_MATVEC_BODY }
__attribute__((target("avx2,fma"))) void sigmoid_avx2(float* __restrict v, int64_t n) { RNNLAB_SIGMOID_BODY }
bool have_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else  // other architectures: the compiler's own vectorisation of the plain loops
void matvec_avx2(RNNLAB_MATVEC_ARGS(float)) { matvec_base(p, x, I, h, H, out, n); }
void sigmoid_avx2(float* v, int64_t n) { sigmoid_base(v, n); }
bool have_avx2_fma() { return false; }
#endif

void matvec(RNNLAB_MATVEC_ARGS(float)) {
  if (have_avx2_fma()) matvec_avx2(p, x, I, h, H, out, n); else matvec_base(p, x, I, h, H, out, n);
}
void matvec(RNNLAB_MATVEC_ARGS(double)) { RNNLAB_MATVEC_BODY }
void sigmoid_inplace(float* v, int64_t n) { if (have_avx2_fma()) sigmoid_avx2(v, n); else sigmoid_base(v, n); }
void sigmoid_inplace(double* v, int64_t n) {
  for (int64_t k = 0; k < n; ++k) v[k] = 1.0 / (1.0 + std::exp(-v[k]));
}
#undef RNNLAB_MATVEC_BODY
#undef RNNLAB_MATVEC_ARGS
#undef RNNLAB_SIGMOID_BODY

constexpr int64_t kMinUnitsPerThread = 64;            // below this a fork/join costs more than it saves

// Units [u0, u1) of one LSTM step from their pre-activations a (unit-major, 4 per unit): c updated
// in place, the new h written to hn. tanh(v) = 2σ(2v) − 1 (as the training kernels): one sigmoid
// pass for all four gates.
template <typename scalar_t>
void lstm_units(scalar_t* a, scalar_t* c, scalar_t* hn, int64_t u0, int64_t u1) {
  for (int64_t j = u0; j < u1; ++j) a[4 * j + 2] *= scalar_t(2);
  sigmoid_inplace(a + 4 * u0, 4 * (u1 - u0));               // i, f, o; g slot σ(2a_g)
  scalar_t* t2 = hn + u0;                                  // 2c_t, then σ(2c_t), in place
  for (int64_t j = u0; j < u1; ++j) {
    const scalar_t* q = a + 4 * j;
    const scalar_t g = scalar_t(2) * q[2] - scalar_t(1);  // g = tanh(a_g)
    const scalar_t cn = q[1] * c[j] + q[0] * g;            // c_t = f ⊙ c_{t-1} + i ⊙ g
    c[j] = cn;                                             // only this unit's thread reads c_j
    t2[j - u0] = scalar_t(2) * cn;
  }
  sigmoid_inplace(t2, u1 - u0);
  for (int64_t j = u0; j < u1; ++j)                        // h_t = o ⊙ tanh(c_t)
    hn[j] = a[4 * j + 3] * (scalar_t(2) * hn[j] - scalar_t(1));
}

// Runs chunk(k) for k < n: inline for one chunk, else spread over torch's threads (each thread a
// disjoint set of units, so no two write the same state).
template <typename F>
void for_each_chunk(int64_t n, const F& chunk) {
  if (n == 1) {
    chunk(0);
    return;
  }
  at::parallel_for(0, n, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) chunk(k);
  });
}

class LSTMStreamer {
 public:
  // w[l]: (I_l + H, 4H) = [W_ih | W_hh]^T of layer l, columns unit-major; b[l]: (4H) b_ih + b_hh,
  // unit-major. h, c: (L, H) state, updated in place (Python holds views of them). The weights
  // are copied once, packed per thread chunk in blocks of 64 columns.
  LSTMStreamer(const std::vector<Tensor>& w, std::vector<Tensor> b, Tensor h, Tensor c, int64_t threads)
      : b_(std::move(b)) {
    H_ = h.size(1);
    chunks_ = std::max<int64_t>(1, std::min<int64_t>(threads, H_ / kMinUnitsPerThread));
    for (const Tensor& wl : w) {
      const int64_t K = wl.size(0);
      in_.push_back(K - H_);
      std::vector<Tensor> per_chunk;
      for (int64_t k = 0; k < chunks_; ++k) {
        const int64_t col0 = 4 * (k * H_ / chunks_), ncols = 4 * ((k + 1) * H_ / chunks_) - col0;
        const int64_t nb = (ncols + kBlock - 1) / kBlock;
        Tensor packed = at::zeros({nb, K, kBlock}, wl.options());
        for (int64_t blk = 0; blk < nb; ++blk) {
          const int64_t width = std::min(kBlock, ncols - blk * kBlock);
          packed[blk].narrow(1, 0, width).copy_(wl.narrow(1, col0 + blk * kBlock, width));
        }
        per_chunk.push_back(packed);
      }
      w_.push_back(per_chunk);
    }
    a_ = at::empty({4 * H_}, h.options());
    h_next_ = at::empty({H_}, h.options());
    bind(std::move(h), std::move(c));
  }

  // The state the steps update in place: h and c, (L, H) contiguous CPU tensors of the weights' dtype.
  void bind(Tensor h, Tensor c) {
    const auto L = static_cast<int64_t>(w_.size());
    for (const Tensor* t : {&h, &c})
      TORCH_CHECK(t->dim() == 2 && t->size(0) == L && t->size(1) == H_ && t->is_contiguous() &&
                      t->device().is_cpu() && t->scalar_type() == b_[0].scalar_type(),
                  "LSTMStreamer.bind: expected (", L, ", ", H_, ") contiguous CPU tensors of the weights' dtype");
    h_ = std::move(h);
    c_ = std::move(c);
  }

  // One step: x holds I_0 contiguous values of the state's dtype, on the CPU (a (1, I_0) row is
  // fine). Returns a copy of the top layer's new h.
  Tensor step(const Tensor& x) {
    TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == h_.scalar_type() && x.is_contiguous() &&
                    x.numel() == in_[0], "LSTMStreamer.step: x must be a contiguous CPU tensor of ", in_[0],
                " values of the state's dtype");
    AT_DISPATCH_FLOATING_TYPES(h_.scalar_type(), "lstm_stream_step", [&] {
      const scalar_t* z = x.data_ptr<scalar_t>();
      scalar_t* h0 = h_.data_ptr<scalar_t>();
      scalar_t* c0 = c_.data_ptr<scalar_t>();
      scalar_t* a = a_.data_ptr<scalar_t>();
      scalar_t* hn = h_next_.data_ptr<scalar_t>();
      const int64_t H = H_;
      for (size_t l = 0; l < w_.size(); ++l) {
        scalar_t* h = h0 + l * H;
        scalar_t* c = c0 + l * H;
        const scalar_t* b = b_[l].data_ptr<scalar_t>();
        const int64_t I = in_[l];
        auto chunk = [&](int64_t k) {
          const int64_t u0 = k * H / chunks_, u1 = (k + 1) * H / chunks_, n = 4 * (u1 - u0);
          scalar_t* ac = a + 4 * u0;
          std::copy(b + 4 * u0, b + 4 * u1, ac);
          matvec(w_[l][k].data_ptr<scalar_t>(), z, I, h, H, ac, n);   // W_ih x + W_hh h_{t-1}
          lstm_units(a, c, hn, u0, u1);
        };
        for_each_chunk(chunks_, chunk);
        std::copy(hn, hn + H, h);                                  // every unit read h_{t-1}: now replace it
        z = h;
      }
    });
    Tensor out = at::empty({H_}, h_.options());             // the top layer's h_t, a copy
    AT_DISPATCH_FLOATING_TYPES(h_.scalar_type(), "lstm_stream_out", [&] {
      const scalar_t* top = h_.data_ptr<scalar_t>() + (h_.size(0) - 1) * H_;
      std::copy(top, top + H_, out.data_ptr<scalar_t>());
    });
    return out;
  }

  int64_t chunks() const { return chunks_; }

 private:
  std::vector<std::vector<Tensor>> w_;                             // [layer][chunk] (blocks, K, 64)
  std::vector<Tensor> b_;
  std::vector<int64_t> in_;                                        // each layer's input size
  Tensor h_, c_, a_, h_next_;
  int64_t H_ = 0, chunks_ = 1;
};


// ------------------------------------------------------- the same step with int8 weights
// Stream(..., int8=True): dynamic int8 quantisation, as in ONNX Runtime's and torch's dynamically
// quantised LSTMs. W_ih and W_hh are int8 with one float scale per output row (symmetric,
// quantised once, in Python: rnnlab.nn.stream.quantize_rows); at each step each layer's input x
// and previous state h become int8 with one scale each (max |v| / 127, symmetric), so the
// products are exact int8 × int8 sums in int32, rescaled per row:
//   a_j = b_j + s_x s_ih,j Σ_k q_ih,jk q_x,k + s_h s_hh,j Σ_k q_hh,jk q_h,k.
// Why it is faster: a batch-1 step reads every weight once for two operations, so it runs at the
// speed the weights arrive from the caches, and int8 weights are a quarter of the bytes.
// Layout, per thread chunk and block of 64 columns: row quad r holds, for each column in turn, its
// 4 weights of inputs 4r..4r+3 (the x rows, then the h rows, each zero-padded to a multiple of 4),
// which is what one 4-byte broadcast of the activations meets in AVX2's vpmaddubsw and AVX-512
// VNNI's vpdpbusd. The integer sums are exact, so every instruction set gives the same numbers.
inline int64_t pad4(int64_t n) { return (n + 3) / 4 * 4; }

// acc[j] += Σ_k p[k / 4][j][k % 4] · a[k] for the block's 64 columns, k < K4 (a multiple of 4).
// w128[j] = 128 Σ_k p[k / 4][j][k % 4], precomputed, which only the VNNI loop needs.
#define RNNLAB_QDOT_ARGS                                                        \
  const int8_t* __restrict p, const int8_t* __restrict a, int64_t K4, const int32_t* __restrict w128, \
  int32_t* __restrict acc
void qdot_base(RNNLAB_QDOT_ARGS) {
  for (int64_t r = 0; r < K4 / 4; ++r) {
    const int8_t* row = p + r * kBlock * 4;
    const int32_t a0 = a[4 * r], a1 = a[4 * r + 1], a2 = a[4 * r + 2], a3 = a[4 * r + 3];
    for (int64_t j = 0; j < kBlock; ++j)
      acc[j] += row[4 * j] * a0 + row[4 * j + 1] * a1 + row[4 * j + 2] * a2 + row[4 * j + 3] * a3;
  }
}
#if defined(__x86_64__) || defined(__i386__)
// Both instructions take unsigned × signed bytes. AVX2: |a| times w·sign(a) is a·w; weights and
// activations lie in [−127, 127] (never −128), so vpmaddubsw's pair sums (≤ 2 · 127 · 127) never
// saturate. VNNI: a + 128 is unsigned, and vpdpbusd sums in 32 bits without saturating, so
// Σ (a + 128) w − 128 Σ w = Σ a w with one instruction per 32 products.
__attribute__((target("avx2"))) void qdot_avx2(RNNLAB_QDOT_ARGS) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i s[8];
  for (int g = 0; g < 8; ++g) s[g] = _mm256_setzero_si256();
  for (int64_t r = 0; r < K4 / 4; ++r) {
    int32_t quad;
    std::memcpy(&quad, a + 4 * r, sizeof(quad));
    const __m256i av = _mm256_set1_epi32(quad);
    const __m256i aa = _mm256_abs_epi8(av);
    const int8_t* row = p + r * kBlock * 4;
    for (int g = 0; g < 8; ++g) {
      const __m256i w = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * g)), av);
      s[g] = _mm256_add_epi32(s[g], _mm256_madd_epi16(_mm256_maddubs_epi16(aa, w), ones));
    }
  }
  for (int g = 0; g < 8; ++g) {
    __m256i* out = reinterpret_cast<__m256i*>(acc + 8 * g);
    _mm256_storeu_si256(out, _mm256_add_epi32(_mm256_loadu_si256(out), s[g]));
  }
}
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512vnni"))) void qdot_vnni(RNNLAB_QDOT_ARGS) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));   // a ^ 0x80 = a + 128 as a byte
  __m256i s[8];
  for (int g = 0; g < 8; ++g)
    s[g] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w128 + 8 * g)));
  for (int64_t r = 0; r < K4 / 4; ++r) {
    int32_t quad;
    std::memcpy(&quad, a + 4 * r, sizeof(quad));
    const __m256i au = _mm256_xor_si256(_mm256_set1_epi32(quad), flip);
    const int8_t* row = p + r * kBlock * 4;
    for (int g = 0; g < 8; ++g)
      s[g] = _mm256_dpbusd_epi32(s[g], au, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32 * g)));
  }
  for (int g = 0; g < 8; ++g) {
    __m256i* out = reinterpret_cast<__m256i*>(acc + 8 * g);
    _mm256_storeu_si256(out, _mm256_add_epi32(_mm256_loadu_si256(out), s[g]));
  }
}
bool have_vnni() {
  static const bool yes = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2");
  return yes;
}
#else
void qdot_avx2(RNNLAB_QDOT_ARGS) { qdot_base(p, a, K4, w128, acc); }
void qdot_vnni(RNNLAB_QDOT_ARGS) { qdot_base(p, a, K4, w128, acc); }
bool have_vnni() { return false; }
#endif

// Which int8 loop runs on this CPU: "avx512-vnni", "avx2" or "base".
std::string int8_isa() { return have_vnni() ? "avx512-vnni" : have_avx2_fma() ? "avx2" : "base"; }

void qdot(RNNLAB_QDOT_ARGS) {
  if (have_vnni()) qdot_vnni(p, a, K4, w128, acc);
  else if (have_avx2_fma()) qdot_avx2(p, a, K4, w128, acc);
  else qdot_base(p, a, K4, w128, acc);
}
#undef RNNLAB_QDOT_ARGS

// q[0, n) = round(v · 127 / m), m = max |v| (ties to even, as torch.round);
// q[n, n4) = 0. Returns the scale m / 127 (0 for an all-zero v).
float quantize_row(const float* __restrict v, int64_t n, int8_t* __restrict q, int64_t n4) {
  float m = 0.f;
  for (int64_t k = 0; k < n; ++k) m = std::max(m, std::fabs(v[k]));
  std::fill(q + n, q + n4, int8_t(0));
  if (!(m > 0.f)) {
    std::fill(q, q + n, int8_t(0));
    return 0.f;
  }
  // Adding and subtracting 1.5 · 2^23 rounds a float of magnitude < 2^22 to an integer, ties to
  // even (the default rounding mode), in plain SSE2 arithmetic that vectorises, unlike a call to
  // nearbyint per element. The clamp also maps a NaN to a number (no undefined cast).
  const float inv = 127.f / m, magic = 12582912.f;
  for (int64_t k = 0; k < n; ++k) {
    const float r = (std::min(127.f, std::max(-127.f, v[k] * inv)) + magic) - magic;
    q[k] = static_cast<int8_t>(static_cast<int32_t>(r));
  }
  return m / 127.f;
}

// Units [u0, u1) of one GRU step (gate order r|z|n, unit-major: a[3j + k]) from a = b + W_ih x +
// W_hh h with the n column's h-part kept apart in an (it is gated by r; b_hn, torch.nn's b_hh of n,
// is added here): r = σ(a_r), z = σ(a_z), n = tanh(a_n + r ⊙ (an + b_hn)), h_t = (1 − z) ⊙ n + z ⊙ h.
// tn is scratch of u1 − u0 values; tanh(v) = 2σ(2v) − 1, as lstm_units.
void gru_units(float* a, const float* an, const float* b_hn, const float* h, float* tn, float* hn, int64_t u0,
               int64_t u1) {
  for (int64_t j = u0; j < u1; ++j) tn[j - u0] = a[3 * j + 2];     // n's x part, before σ overwrites it
  sigmoid_inplace(a + 3 * u0, 3 * (u1 - u0));                    // r, z (and a discarded n slot)
  for (int64_t j = u0; j < u1; ++j) tn[j - u0] = 2.f * (tn[j - u0] + a[3 * j] * (an[j] + b_hn[j]));
  sigmoid_inplace(tn, u1 - u0);
  for (int64_t j = u0; j < u1; ++j) {
    const float z = a[3 * j + 1], n = 2.f * tn[j - u0] - 1.f;
    hn[j] = (1.f - z) * n + z * h[j];
  }
}

// Units [u0, u1) of one Elman RNN step: h_t = tanh(a) or relu(a).
void rnn_units(float* a, float* hn, int64_t u0, int64_t u1, bool relu) {
  if (relu) {
    for (int64_t j = u0; j < u1; ++j) hn[j] = std::max(a[j], 0.f);
    return;
  }
  for (int64_t j = u0; j < u1; ++j) a[j] *= 2.f;
  sigmoid_inplace(a + u0, u1 - u0);
  for (int64_t j = u0; j < u1; ++j) hn[j] = 2.f * a[j] - 1.f;
}

class StreamerInt8 {
 public:
  // mode: "lstm", "gru", "rnn_tanh" or "rnn_relu", with G = 4, 3, 1 gates per unit. wx[l]:
  // (I_l, G·H), wh[l]: (H, G·H) int8, the quantised W_ih^T and W_hh^T of layer l, columns
  // unit-major (column G·j + k = gate k of unit j); sx[l], sh[l]: (G·H) float32, their per-row
  // scales; b[l]: (G·H) float32 b_ih + b_hh (the GRU's n column: b_ih only); b_hn[l]: (H) the
  // GRU's b_hh of n (empty otherwise); h, c: (L, H) float32 state, updated in place (c unused
  // but for the LSTM).
  StreamerInt8(const std::string& mode, const std::vector<Tensor>& wx, const std::vector<Tensor>& wh,
               std::vector<Tensor> sx, std::vector<Tensor> sh, std::vector<Tensor> b, std::vector<Tensor> b_hn,
               Tensor h, Tensor c, int64_t threads)
      : sx_(std::move(sx)), sh_(std::move(sh)), b_(std::move(b)), b_hn_(std::move(b_hn)) {
    TORCH_CHECK(mode == "lstm" || mode == "gru" || mode == "rnn_tanh" || mode == "rnn_relu",
                "StreamerInt8: mode must be lstm, gru, rnn_tanh or rnn_relu, got ", mode);
    mode_ = mode;
    G_ = mode == "lstm" ? 4 : mode == "gru" ? 3 : 1;
    H_ = h.size(1);
    const int64_t GH = G_ * H_;
    TORCH_CHECK(h.scalar_type() == at::kFloat && wx.size() == wh.size() && wx.size() == b_.size() &&
                    sx_.size() == b_.size() && sh_.size() == b_.size() && b_hn_.size() == b_.size(),
                "StreamerInt8: expected float32 state and one wx, wh, sx, sh, b, b_hn per layer");
    chunks_ = std::max<int64_t>(1, std::min<int64_t>(threads, H_ / kMinUnitsPerThread));
    int64_t widest = pad4(H_);
    for (size_t l = 0; l < wx.size(); ++l) {
      TORCH_CHECK(wx[l].scalar_type() == at::kChar && wh[l].scalar_type() == at::kChar && wx[l].dim() == 2 &&
                      wh[l].dim() == 2 && wx[l].size(1) == GH && wh[l].size(0) == H_ && wh[l].size(1) == GH &&
                      sx_[l].numel() == GH && sh_[l].numel() == GH && b_[l].numel() == GH &&
                      b_hn_[l].numel() == (G_ == 3 ? H_ : 0),
                  "StreamerInt8: layer ", l, ": expected int8 wx (I, GH), wh (H, GH), (GH) scales and bias "
                  "and the GRU's (H) b_hn, G = ", G_);
      const int64_t I = wx[l].size(0), I4 = pad4(I), H4 = pad4(H_);
      in_.push_back(I);
      widest = std::max(widest, I4);
      // (K, GH) → zero rows to K4 → (K4 / 4, 4, GH): quad r, input k % 4, column
      auto quads = [](const Tensor& w) {
        const int64_t K = w.size(0), K4 = pad4(K);
        return at::constant_pad_nd(w, {0, 0, 0, K4 - K}).view({K4 / 4, 4, w.size(1)});
      };
      const Tensor qx = quads(wx[l]), qh = quads(wh[l]);
      std::vector<Tensor> per_chunk, sums;
      for (int64_t k = 0; k < chunks_; ++k) {
        const int64_t col0 = G_ * (k * H_ / chunks_), ncols = G_ * ((k + 1) * H_ / chunks_) - col0;
        const int64_t nb = (ncols + kBlock - 1) / kBlock;
        Tensor packed = at::zeros({nb, (I4 + H4) / 4, kBlock, 4}, wx[l].options());
        for (int64_t blk = 0; blk < nb; ++blk) {
          const int64_t width = std::min(kBlock, ncols - blk * kBlock), c0 = col0 + blk * kBlock;
          packed[blk].narrow(0, 0, I4 / 4).narrow(1, 0, width).copy_(qx.narrow(2, c0, width).transpose(1, 2));
          packed[blk].narrow(0, I4 / 4, H4 / 4).narrow(1, 0, width).copy_(qh.narrow(2, c0, width).transpose(1, 2));
        }
        per_chunk.push_back(packed);
        // 128 Σ_k w per block, part (x, h) and column: (nb, 2, 64) int32
        const Tensor wide = packed.to(at::kInt);
        sums.push_back(at::stack({wide.narrow(1, 0, I4 / 4).sum({1, 3}), wide.narrow(1, I4 / 4, H4 / 4).sum({1, 3})}, 1)
                           .mul_(128).to(at::kInt).contiguous());
      }
      w_.push_back(per_chunk);
      w128_.push_back(sums);
    }
    for (auto* v : {&sx_, &sh_, &b_, &b_hn_})
      for (auto& t : *v) t = t.contiguous();
    a_ = at::empty({GH}, h.options());
    an_ = at::empty({H_}, h.options());
    tn_ = at::empty({H_}, h.options());
    h_next_ = at::empty({H_}, h.options());
    qx_ = at::empty({widest}, wx[0].options());
    qh_ = at::empty({pad4(H_)}, wx[0].options());
    bind(std::move(h), std::move(c));
  }

  void bind(Tensor h, Tensor c) {
    const auto L = static_cast<int64_t>(w_.size());
    for (const Tensor* t : {&h, &c})
      TORCH_CHECK(t->dim() == 2 && t->size(0) == L && t->size(1) == H_ && t->is_contiguous() &&
                      t->device().is_cpu() && t->scalar_type() == at::kFloat,
                  "StreamerInt8.bind: expected (", L, ", ", H_, ") contiguous float32 CPU tensors");
    h_ = std::move(h);
    c_ = std::move(c);
  }

  // One step, as LSTMStreamer.step: x holds I_0 contiguous float32 values on the CPU.
  Tensor step(const Tensor& x) {
    TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.numel() == in_[0],
                "StreamerInt8.step: x must be a contiguous CPU float32 tensor of ", in_[0], " values");
    const float* z = x.data_ptr<float>();
    float* a = a_.data_ptr<float>();
    float* an = an_.data_ptr<float>();
    float* tn = tn_.data_ptr<float>();
    float* hn = h_next_.data_ptr<float>();
    int8_t* qx = qx_.data_ptr<int8_t>();
    int8_t* qh = qh_.data_ptr<int8_t>();
    const int64_t H = H_, H4 = pad4(H_), G = G_;
    const bool gru = G == 3, relu = mode_ == "rnn_relu";
    for (size_t l = 0; l < w_.size(); ++l) {
      float* h = h_.data_ptr<float>() + l * H;
      float* c = c_.data_ptr<float>() + l * H;
      const float* b = b_[l].data_ptr<float>();
      const float* b_hn = gru ? b_hn_[l].data_ptr<float>() : nullptr;
      const float* wsx = sx_[l].data_ptr<float>();
      const float* wsh = sh_[l].data_ptr<float>();
      const int64_t I = in_[l], I4 = pad4(I);
      const float s_x = quantize_row(z, I, qx, I4);
      const float s_h = quantize_row(h, H, qh, H4);
      auto chunk = [&](int64_t k) {
        const int64_t u0 = k * H / chunks_, u1 = (k + 1) * H / chunks_, n = G * (u1 - u0);
        const int8_t* pk = w_[l][k].data_ptr<int8_t>();
        const int32_t* sk = w128_[l][k].data_ptr<int32_t>();
        for (int64_t blk = 0; blk * kBlock < n; ++blk) {
          int32_t acc_x[kBlock] = {}, acc_h[kBlock] = {};
          const int8_t* pb = pk + blk * (I4 + H4) * kBlock;
          const int32_t* sb = sk + blk * 2 * kBlock;
          qdot(pb, qx, I4, sb, acc_x);                               // W_ih x, in int8 units
          qdot(pb + I4 * kBlock, qh, H4, sb + kBlock, acc_h);        // W_hh h_{t-1}
          const int64_t col = G * u0 + blk * kBlock, width = std::min(kBlock, n - blk * kBlock);
          for (int64_t j = 0; j < width; ++j) {
            const int64_t cj = col + j;
            const float hx = (s_h * wsh[cj]) * float(acc_h[j]);
            a[cj] = b[cj] + (s_x * wsx[cj]) * float(acc_x[j]);
            if (gru && cj % 3 == 2) an[cj / 3] = hx;                  // the GRU's n: gated by r
            else a[cj] += hx;
          }
        }
        if (G == 4) lstm_units(a, c, hn, u0, u1);
        else if (gru) gru_units(a, an, b_hn, h, tn + u0, hn, u0, u1);
        else rnn_units(a, hn, u0, u1, relu);
      };
      for_each_chunk(chunks_, chunk);
      std::copy(hn, hn + H, h);
      z = h;
    }
    Tensor out = at::empty({H_}, h_.options());
    const float* top = h_.data_ptr<float>() + (h_.size(0) - 1) * H_;
    std::copy(top, top + H_, out.data_ptr<float>());
    return out;
  }

  int64_t chunks() const { return chunks_; }

 private:
  std::vector<std::vector<Tensor>> w_;                             // [layer][chunk] (blocks, quads, 64, 4)
  std::vector<std::vector<Tensor>> w128_;                          // [layer][chunk] (blocks, 2, 64) 128 Σ w
  std::vector<Tensor> sx_, sh_, b_, b_hn_;
  std::vector<int64_t> in_;
  std::string mode_;
  Tensor h_, c_, a_, an_, tn_, h_next_, qx_, qh_;
  int64_t G_ = 4, H_ = 0, chunks_ = 1;
};

}  // namespace streaming

}  // namespace

// ------------------------------------------------------------------ torch.library operators
// The row-major loops and the LSTM's unit-major loop as dispatcher operators, so that torch.compile,
// torch.export and AOTInductor see one opaque call per layer-direction (engine/ops.py adds their fake
// implementations, and the training operators' autograd formulas, in Python). Registered in C++ so
// that a package compiled by AOTInductor finds them with torch.ops.load_library alone, without
// rnnlab's Python code.
// Unused buffers come back as empty tensors (an operator returns no None). Outputs never alias
// inputs or each other: the input projection is computed here, and the LSTM's and RNN's shared
// pre-activation gradient comes back once (dhw empty).
namespace {

Tensor nothing(const Tensor& like) { return at::empty({0}, like.options()); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> seq_forward_op(
    c10::string_view mode, const Tensor& x, const Tensor& h0, const c10::optional<Tensor>& c0,
    const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
    const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& mask) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), GH = w_ih.size(0);
  const bool is_gru = mode == "gru", is_lstm = mode == "lstm";
  c10::optional<Tensor> b;
  if (b_ih) b = is_gru ? b_ih->contiguous() : (*b_ih + *b_hh);   // the GRU keeps b_hh for its step
  // (the bias is added by the forward loops as they read the projection)
  Tensor xw = rnnlab::matmul(x.contiguous().view({T * B, I}), w_ih.t(), c10::nullopt).view({T, B, GH});
  const Tensor w = w_hh.contiguous();
  c10::optional<Tensor> m;
  if (mask) m = mask->reshape({T, B}).contiguous();
  if (is_lstm) {
    auto r = lstm_forward(xw, h0.contiguous(), c0->contiguous(), w, m, b);
    return {r[0], r[1], r[2], nothing(x), r[3]};
  }
  if (is_gru) {
    auto r = gru_forward(xw, h0.contiguous(), w, b_hh, m, b);
    return {r[0], nothing(x), r[1], r[2], nothing(x)};
  }
  return {rnn_forward(xw, h0.contiguous(), w, mode == "rnn_relu", m, b), nothing(x), nothing(x), nothing(x),
          nothing(x)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> seq_backward_op(
    c10::string_view mode, const Tensor& d_out, const Tensor& d_h_last, const c10::optional<Tensor>& d_c_last,
    const Tensor& hs, const Tensor& cs, const Tensor& gates, const Tensor& hn, const Tensor& tcs,
    const Tensor& w_hh, const c10::optional<Tensor>& mask) {
  const int64_t T = hs.size(0) - 1, B = hs.size(1);
  c10::optional<Tensor> m;
  const c10::optional<Tensor> none;
  Tensor d = d_out.contiguous();
  if (mask) {
    m = mask->reshape({T, B}).contiguous();
    d = (d * m->unsqueeze(-1)).contiguous();               // padded outputs were constant zeros
  }
  const Tensor w = w_hh.contiguous();
  if (mode == "lstm") {
    auto r = lstm_backward(d, d_h_last, *d_c_last, gates, cs, tcs, w, m, none, none);
    return {r[0], nothing(hs), r[1], r[2]};
  }
  if (mode == "gru") {
    auto r = gru_backward(d, d_h_last, gates, hn, hs, w, m, none);
    return {r[0], r[1], r[2], nothing(hs)};
  }
  auto r = rnn_backward(d, d_h_last, hs, w, mode == "rnn_relu", m, none);
  return {r[0], nothing(hs), r[1], nothing(hs)};
}

// b_ih + b_hh, the one bias the LSTM loops add (either alone when the other is missing).
c10::optional<Tensor> summed_bias(const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh) {
  if (b_ih && b_hh) return *b_ih + *b_hh;
  if (b_ih || b_hh) return b_ih ? *b_ih : *b_hh;
  return c10::nullopt;
}

// The LSTM's unit-major loop (lstm_tiled.h) for float32 whole sequences: the batch padded to
// tiled::op_padded_batch(B), a function of B alone, which ops.py's fake implementation repeats.
// Returns the outputs, out (T, B, H) = h_1..h_T, h_T and c_T (B, H) (unpadded copies: an operator's
// outputs may not alias each other, and a view of the padded states would leave the compiler asking
// whether B == Bp), then the loop's buffers that backward reads besides h_0 and out (which hold
// the states of its weight gradient): cs (T+1, H, Bp), gates (4H, T, Bp), tcs (T, H, Bp).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_tiled_forward_op(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "rnnlab::lstm_tiled_forward: float32 only, got ", x.scalar_type());
  const int64_t Bp = rnnlab::tiled::op_padded_batch(x.size(1));
  const std::string isa = rnnlab::tiled::op_isa(Bp);
  TORCH_CHECK(!isa.empty(), "rnnlab::lstm_tiled_forward: this CPU has neither AVX-512 nor AVX2+FMA "
              "(or the kernels were built without GCC); the tiled LSTM loop cannot run here");
  const c10::optional<Tensor> b = summed_bias(b_ih, b_hh);
  auto r = rnnlab::tiled::lstm_forward_padded(isa, Bp, x.contiguous(), h0.contiguous(), c0.contiguous(),
                                              w_ih.contiguous(), w_hh.contiguous(), b);
  const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
  // out is rows 1..T of a (T+1, B, H) buffer whose row 0 (h_0) no output shares: without padding,
  // backward reads h_0..h_{T-1} as one matrix from it (lstm_tiled_states), as eager reads its hs
  Tensor states = workspace(30, {T + 1, B, H}, x.options());   // reused when free: no page faults per call
  states.copy_(r[0].narrow(2, 0, B).permute({0, 2, 1}));
  Tensor out = states.narrow(0, 1, T);
  Tensor h_last = at::empty({B, H}, x.options());     // its own tensor, so that its gradient comes
  h_last.copy_(r[0][T].narrow(1, 0, B).t());          // apart from d_out's (no (T, B, H) sum in backward)
  Tensor c_last = at::empty({B, H}, x.options());
  c_last.copy_(r[1][T].narrow(1, 0, B).t());
  return {out, h_last, c_last, r[1], r[2], r[3]};
}

// The LSTM's inference loop (lstm_tiled.h's lstm_infer) for float32 whole sequences without a
// gradient to come: (out (T, B, H), h_T, c_T), nothing kept for backward (the operator has no
// autograd formula; fast.py calls it only when no gradient is to come).
std::tuple<Tensor, Tensor, Tensor> lstm_infer_op(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                                 const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
                                                 const c10::optional<Tensor>& b_hh) {
  const c10::optional<Tensor> b = summed_bias(b_ih, b_hh);
  auto r = rnnlab::tiled::lstm_infer(x, h0, c0, w_ih, w_hh, b, c10::nullopt);
  return {r[0], r[1], r[2]};
}

// The GRU's inference loop (lstm_tiled.h's gru_infer), as lstm_infer_op: (out (T, B, H), h_T).
std::tuple<Tensor, Tensor> gru_infer_op(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                        const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh) {
  auto r = rnnlab::tiled::gru_infer(x, h0, w_ih, w_hh, b_ih, b_hh, c10::nullopt);
  return {r[0], r[1]};
}

// The vanilla RNN's inference loop (lstm_tiled.h's rnn_infer), as lstm_infer_op: (out (T, B, H), h_T).
std::tuple<Tensor, Tensor> rnn_infer_op(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                        const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh,
                                        bool relu) {
  auto r = rnnlab::tiled::rnn_infer(x, h0, w_ih, w_hh, b_ih, b_hh, relu, c10::nullopt);
  return {r[0], r[1]};
}

// h_0..h_{T-1} as a (T·Bp, H) matrix for dW_hh, from h_0 and out: without padding, the rows of
// the buffer out sits in (lstm_tiled_forward_op), when out is still that view and its row 0 h_0;
// otherwise (padding, or out copied on its way here) a zero-padded copy (the padding rows meet
// zero columns of the gate gradients).
Tensor lstm_tiled_states(const Tensor& h0, const Tensor& out, int64_t Bp) {
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  if (Bp == B && out.is_contiguous() && out.storage_offset() == B * H &&
      out.storage().nbytes() >= size_t((T + 1) * B * H) * out.element_size()) {
    Tensor states = at::empty({0}, out.options());
    states.set_(out.storage(), 0, {T * B, H}, {H, 1});
    if (at::equal(states.narrow(0, 0, B), h0)) return states;
  }
  Tensor hs = workspace(31, {T, Bp, H}, out.options());
  hs.zero_();
  hs[0].narrow(0, 0, B).copy_(h0);
  if (T > 1) hs.narrow(0, 1, T - 1).narrow(1, 0, B).copy_(out.narrow(0, 0, T - 1));
  return hs.view({T * Bp, H});
}

// Its backward, the padding kept inside: {dx (T, B, I), dh_0, dc_0 (B, H), dW_ih (4H, I), dW_hh (4H, H),
// db (4H)} (those not asked for empty), the eager engine's products (fast.py's _tiled_backward:
// the same matmuls over the padded buffers, whose padding columns have zero gate gradients).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_tiled_backward_op(
    const Tensor& d_out, const Tensor& d_h_last, const Tensor& d_c_last, const Tensor& x, const Tensor& h0,
    const Tensor& out, const Tensor& w_ih, const Tensor& w_hh, const Tensor& cs, const Tensor& gates,
    const Tensor& tcs, bool need_x, bool need_w_ih, bool need_w_hh, bool need_b) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(1), Bp = gates.size(2);
  const c10::optional<Tensor> none;
  auto r = rnnlab::tiled::lstm_backward(d_out, d_h_last, d_c_last, gates, cs, tcs, w_hh.contiguous(), false);
  const Tensor da = r[0].view({4 * H, T * Bp});                 // (4H, T·Bp); its transpose is (T·Bp, 4H)
  Tensor dx = nothing(x), dw_ih = nothing(x), dw_hh = nothing(x), db = nothing(x);
  if (need_x) {
    dx = rnnlab::matmul(da.t(), w_ih.contiguous(), none).view({T, Bp, I});
    if (Bp != B) dx = dx.narrow(1, 0, B).contiguous();
  }
  if (need_w_ih) {
    Tensor xp = x.contiguous();
    if (Bp != B) xp = at::constant_pad_nd(xp, {0, 0, 0, Bp - B});
    dw_ih = rnnlab::matmul(da, xp.view({T * Bp, I}), none);
  }
  if (need_w_hh) dw_hh = rnnlab::matmul(da, lstm_tiled_states(h0, out, Bp), none);
  if (need_b) db = da.sum(1);
  return {dx, r[1], r[2], dw_ih, dw_hh, db};
}

// The float32 LSTM step as a pure function (rnnlab::lstm_step_pack / rnnlab::lstm_step): the
// loops of LSTMStreamer::step for one layer at batch 1, the weights packed once into one tensor
// and the state passed in and returned, so that a traced decoding loop holds one call per step.
// Packed layout (float32, 1-D): kStepHead header values (header[0]: the chunk count, header[1..2]:
// I and H, as exact small floats), the bias b_ih + b_hh unit-major, padded to a multiple of
// kStepHead, then each chunk's blocks of 64 columns (nb, I + H, 64) as LSTMStreamer packs them.
using streaming::for_each_chunk;
using streaming::kBlock;
using streaming::lstm_units;
using streaming::matvec;

constexpr int64_t kStepHead = 16;                       // 64 bytes: the blocks start cache-line aligned

int64_t step_bias_len(int64_t H) { return (4 * H + kStepHead - 1) / kStepHead * kStepHead; }

int64_t step_packed_len(int64_t I, int64_t H, int64_t chunks) {
  int64_t len = kStepHead + step_bias_len(H);
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t ncols = 4 * ((k + 1) * H / chunks) - 4 * (k * H / chunks);
    len += (ncols + kBlock - 1) / kBlock * kBlock * (I + H);
  }
  return len;
}

Tensor lstm_step_pack_op(const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
                         const c10::optional<Tensor>& b_hh, int64_t chunks) {
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2 && w_hh.size(0) == 4 * w_hh.size(1) && w_ih.size(0) == w_hh.size(0),
              "rnnlab::lstm_step_pack: expected w_ih (4H, I) and w_hh (4H, H), got ", w_ih.sizes(), " and ", w_hh.sizes());
  TORCH_CHECK(w_ih.scalar_type() == at::kFloat && w_hh.scalar_type() == at::kFloat && w_ih.device().is_cpu() &&
                  w_hh.device().is_cpu(), "rnnlab::lstm_step_pack: float32 CPU weights only, got ",
              w_ih.scalar_type(), " on ", w_ih.device());
  const int64_t H = w_hh.size(1), I = w_ih.size(1);
  TORCH_CHECK(H > 0 && chunks >= 1 && chunks <= H, "rnnlab::lstm_step_pack: expected 1 <= chunks <= H = ", H,
              ", got ", chunks);
  for (const auto* b : {&b_ih, &b_hh})
    TORCH_CHECK(!b->has_value() || ((*b)->numel() == 4 * H && (*b)->scalar_type() == at::kFloat && (*b)->device().is_cpu()),
                "rnnlab::lstm_step_pack: expected float32 CPU biases of ", 4 * H, " values");
  Tensor packed = at::zeros({step_packed_len(I, H, chunks)}, w_ih.options());
  float* head = packed.data_ptr<float>();
  head[0] = static_cast<float>(chunks);
  head[1] = static_cast<float>(I);
  head[2] = static_cast<float>(H);
  auto unit_major = [H](const Tensor& v) {               // gate-major rows (4H, ...) -> row 4j + k
    return v.reshape({4, H, -1}).transpose(0, 1).reshape({4 * H, -1});
  };
  Tensor b = at::zeros({4 * H}, w_ih.options());
  if (b_ih) b += b_ih->reshape({4 * H});
  if (b_hh) b += b_hh->reshape({4 * H});
  packed.narrow(0, kStepHead, 4 * H).copy_(unit_major(b).reshape({4 * H}));
  const Tensor w = unit_major(at::cat({w_ih, w_hh}, 1)).t();       // (I + H, 4H), columns unit-major
  int64_t off = kStepHead + step_bias_len(H);
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t col0 = 4 * (k * H / chunks), ncols = 4 * ((k + 1) * H / chunks) - col0;
    const int64_t nb = (ncols + kBlock - 1) / kBlock;
    Tensor blocks = packed.narrow(0, off, nb * (I + H) * kBlock).view({nb, I + H, kBlock});
    for (int64_t blk = 0; blk < nb; ++blk) {
      const int64_t width = std::min(kBlock, ncols - blk * kBlock);
      blocks[blk].narrow(1, 0, width).copy_(w.narrow(1, col0 + blk * kBlock, width));
    }
    off += nb * (I + H) * kBlock;
  }
  return packed;
}

// One step at batch 1: x (1, I) or (I), h and c (1, H) or (H); returns (h_t, c_t), new tensors.
std::tuple<Tensor, Tensor> lstm_step_op(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& packed) {
  for (const Tensor* t : {&x, &h, &c, &packed})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu(),
                "rnnlab::lstm_step: float32 CPU tensors only, got ", t->scalar_type(), " on ", t->device());
  TORCH_CHECK(packed.dim() == 1 && packed.numel() > kStepHead,
              "rnnlab::lstm_step: packed must be rnnlab::lstm_step_pack's 1-D tensor");
  const Tensor p = packed.contiguous();
  const float* head = p.data_ptr<float>();
  const auto chunks = static_cast<int64_t>(head[0]), I = static_cast<int64_t>(head[1]),
             H = static_cast<int64_t>(head[2]);
  TORCH_CHECK(chunks >= 1 && H >= 1 && I >= 0 && p.numel() == step_packed_len(I, H, chunks),
              "rnnlab::lstm_step: packed is not rnnlab::lstm_step_pack's output");
  TORCH_CHECK(x.dim() == h.dim() && h.dim() == c.dim() && (x.dim() == 1 || (x.dim() == 2 && x.size(0) == 1 &&
                  h.size(0) == 1 && c.size(0) == 1)),
              "rnnlab::lstm_step: batch 1 only: expected x (1, I), h and c (1, H) (or all unbatched), got ",
              x.sizes(), ", ", h.sizes(), ", ", c.sizes());
  TORCH_CHECK(x.size(-1) == I && h.size(-1) == H && c.size(-1) == H, "rnnlab::lstm_step: expected I = ", I,
              " inputs and H = ", H, " units (the packed weights'), got x ", x.sizes(), ", h ", h.sizes(), ", c ", c.sizes());
  const Tensor xc = x.contiguous(), hc = h.contiguous();
  Tensor c_new = c.contiguous().clone();                 // lstm_units updates c in place
  Tensor h_new = at::empty(h.sizes(), h.options());
  Tensor a = at::empty({4 * H}, h.options());
  const float* z = xc.data_ptr<float>();
  const float* hp = hc.data_ptr<float>();
  const float* b = head + kStepHead;
  float* ap = a.data_ptr<float>();
  float* cp = c_new.data_ptr<float>();
  float* hn = h_new.data_ptr<float>();
  std::vector<const float*> chunk_w(chunks);
  int64_t off = kStepHead + step_bias_len(H);
  for (int64_t k = 0; k < chunks; ++k) {
    chunk_w[k] = head + off;
    const int64_t ncols = 4 * ((k + 1) * H / chunks) - 4 * (k * H / chunks);
    off += (ncols + kBlock - 1) / kBlock * kBlock * (I + H);
  }
  for_each_chunk(chunks, [&](int64_t k) {
    const int64_t u0 = k * H / chunks, u1 = (k + 1) * H / chunks, n = 4 * (u1 - u0);
    float* ac = ap + 4 * u0;
    std::copy(b + 4 * u0, b + 4 * u1, ac);
    matvec(chunk_w[k], z, I, hp, H, ac, n);              // W_ih x + W_hh h_{t-1}
    lstm_units(ap, cp, hn, u0, u1);
  });
  return {h_new, c_new};
}

// The Autograd kernel of the inference-only operators (lstm_infer, gru_infer, rnn_infer, lstm_step_pack,
// lstm_step): they have no backward, so with grad mode on an input that requires grad is refused
// at the call; otherwise the call goes on below autograd. In C++ rather than a Python autograd
// registration, which every call would cross, under no_grad too, at a cost of tens of microseconds
// (a compiled graph calls these operators at each call, lstm_step at every decoding step).
void inference_only(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    for (const c10::IValue& v : torch::jit::last(*stack, op.schema().arguments().size()))
      TORCH_CHECK(!(v.isTensor() && v.toTensor().requires_grad()), op.schema().name(),
                  " is inference only (no autograd formula): call it under torch.no_grad() or with inputs "
                  "that do not require grad");
  }
  op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
}

}  // namespace

TORCH_LIBRARY(rnnlab, m) {
  m.def("seq_forward(str mode, Tensor x, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
        "Tensor? b_hh, Tensor? mask) -> (Tensor hs, Tensor cs, Tensor gates, Tensor hn, Tensor tcs)");
  m.def("seq_backward(str mode, Tensor d_out, Tensor d_h_last, Tensor? d_c_last, Tensor hs, Tensor cs, "
        "Tensor gates, Tensor hn, Tensor tcs, Tensor w_hh, Tensor? mask) -> (Tensor dxw, Tensor dhw, Tensor dh0, Tensor dc0)");
  m.def("lstm_tiled_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
        "-> (Tensor out, Tensor h_last, Tensor c_last, Tensor cs, Tensor gates, Tensor tcs)");
  m.def("lstm_tiled_backward(Tensor d_out, Tensor d_h_last, Tensor d_c_last, Tensor x, Tensor h0, Tensor out, "
        "Tensor w_ih, Tensor w_hh, Tensor cs, Tensor gates, Tensor tcs, bool need_x, bool need_w_ih, bool need_w_hh, "
        "bool need_b) "
        "-> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db)");
  m.def("lstm_infer(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
        "-> (Tensor out, Tensor h_last, Tensor c_last)");
  m.def("gru_infer(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "
        "-> (Tensor out, Tensor h_last)");
  m.def("rnn_infer(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, bool relu) "
        "-> (Tensor out, Tensor h_last)");
  m.def("lstm_step_pack(Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, int chunks) -> Tensor");
  m.def("lstm_step(Tensor x, Tensor h, Tensor c, Tensor packed) -> (Tensor h_new, Tensor c_new)");
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("seq_forward", &seq_forward_op);
  m.impl("seq_backward", &seq_backward_op);
  m.impl("lstm_tiled_forward", &lstm_tiled_forward_op);
  m.impl("lstm_tiled_backward", &lstm_tiled_backward_op);
  m.impl("lstm_infer", &lstm_infer_op);
  m.impl("gru_infer", &gru_infer_op);
  m.impl("rnn_infer", &rnn_infer_op);
  m.impl("lstm_step_pack", &lstm_step_pack_op);
  m.impl("lstm_step", &lstm_step_op);
}

TORCH_LIBRARY_IMPL(rnnlab, Autograd, m) {
  for (const char* name : {"lstm_infer", "gru_infer", "rnn_infer", "lstm_step_pack", "lstm_step"})
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&inference_only>());
}

// The loops touch no Python object: release the GIL so other Python threads run meanwhile.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("lstm_forward", &lstm_forward, release(), py::arg("xw"), py::arg("h0"), py::arg("c0"), py::arg("w_hh"),
        py::arg("mask"), py::arg("bias") = py::none());
  m.def("lstm_backward", &lstm_backward, release());
  m.def("lstm_rows_forward", [](const Tensor& xw, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                                const c10::optional<Tensor>& mask) {
    return lstm_forward_on(rows_isa_or_fail(xw, w_hh.size(1)), xw.contiguous(), h0, c0, w_hh, mask, c10::nullopt);
  }, release());
  m.def("gru_rows_forward", [](const Tensor& xw, const Tensor& h0, const Tensor& w_hh,
                               const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& mask) {
    return gru_forward_on(rows_isa_or_fail(xw, w_hh.size(1)), xw.contiguous(), h0, w_hh, b_hh, mask, c10::nullopt);
  }, release());
  m.def("rnn_rows_forward", [](const Tensor& xw, const Tensor& h0, const Tensor& w_hh, bool relu,
                               const c10::optional<Tensor>& mask) {
    return rnn_forward_on(rows_isa_or_fail(xw, w_hh.size(1)), xw.contiguous(), h0, w_hh, relu, mask, c10::nullopt);
  }, release());
  m.def("lstm_rows_backward", [](const Tensor& d_out, const Tensor& dh_last, const Tensor& dc_last,
                                 const Tensor& gates, const Tensor& cs, const Tensor& tcs, const Tensor& w_hh,
                                 const c10::optional<Tensor>& mask) {
    return lstm_backward_on(rows_isa_or_fail(gates, w_hh.size(1)), d_out, dh_last, dc_last, gates, cs, tcs, w_hh,
                            mask, c10::nullopt, c10::nullopt);
  }, release());
  m.def("rows_isa_for", &rnnlab::tiled::rows_isa_for);
  m.def("gru_forward", &gru_forward, release(), py::arg("xw"), py::arg("h0"), py::arg("w_hh"), py::arg("b_hh"),
        py::arg("mask"), py::arg("b_ih") = py::none());
  m.def("gru_backward", &gru_backward, release());
  m.def("rnn_forward", &rnn_forward, release(), py::arg("xw"), py::arg("h0"), py::arg("w_hh"), py::arg("relu"),
        py::arg("mask"), py::arg("bias") = py::none());
  m.def("rnn_backward", &rnn_backward, release());
  m.def("matmul", &rnnlab::matmul, release());
  m.def("lstm_tiled_forward", &rnnlab::tiled::lstm_forward, release());
  m.def("lstm_tiled_backward", &rnnlab::tiled::lstm_backward, release());
  m.def("lstm_infer", &rnnlab::tiled::lstm_infer, release(), py::arg("x"), py::arg("h0"), py::arg("c0"),
        py::arg("w_ih"), py::arg("w_hh"), py::arg("bias"), py::arg("mask"), py::arg("fused") = py::none());
  m.def("infer_fuses_input", &rnnlab::tiled::fuse_input);
  m.def("gru_infer", &rnnlab::tiled::gru_infer, release(), py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("mask"), py::arg("fused") = py::none());
  m.def("rnn_infer", &rnnlab::tiled::rnn_infer, release(), py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("relu"), py::arg("mask"),
        py::arg("fused") = py::none());
  m.def("infer_isa", &rnnlab::tiled::infer_isa);
  m.def("infer_isa_for", &rnnlab::tiled::infer_isa_for);
  m.def("infer_max_hidden", &rnnlab::tiled::infer_max_hidden);
  m.def("tiled_isa_for", &rnnlab::tiled::isa_for);
  m.def("tiled_choice", &rnnlab::tiled::choice);
  m.def("tiled_op_isa_for", [](int64_t B) { return rnnlab::tiled::op_isa(rnnlab::tiled::op_padded_batch(B)); });
  m.def("set_tiled", [](const std::string& choice) {
    if (!rnnlab::tiled::set_choice(choice))
      throw std::invalid_argument("set_tiled: this CPU cannot run the tiled LSTM loop with " + choice +
                                  " (it has: " + (rnnlab::tiled::detected_isa().empty() ? std::string("neither AVX-512 nor AVX2+FMA")
                                                                                          : rnnlab::tiled::detected_isa()) + ")");
  });
  pybind11::class_<streaming::LSTMStreamer>(m, "LSTMStreamer")
      .def(pybind11::init<std::vector<Tensor>, std::vector<Tensor>, Tensor, Tensor, int64_t>())
      .def("bind", &streaming::LSTMStreamer::bind)
      .def("step", &streaming::LSTMStreamer::step)
      .def("chunks", &streaming::LSTMStreamer::chunks);
  pybind11::class_<streaming::StreamerInt8>(m, "StreamerInt8")
      .def(pybind11::init<std::string, std::vector<Tensor>, std::vector<Tensor>, std::vector<Tensor>,
                          std::vector<Tensor>, std::vector<Tensor>, std::vector<Tensor>, Tensor, Tensor, int64_t>())
      .def("bind", &streaming::StreamerInt8::bind)
      .def("step", &streaming::StreamerInt8::step)
      .def("chunks", &streaming::StreamerInt8::chunks);
  m.def("int8_isa", &streaming::int8_isa);
  m.def("release_workspace", &rnnlab::release_workspace);
  m.def("set_reuse", [](bool on) { rnnlab::reuse_enabled().store(on); });
  rnnlab::def_gemm_functions(m);
}
