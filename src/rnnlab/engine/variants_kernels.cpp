// rnnlab variants fast path: the layer-norm LSTM's time loop in C++ with fused pointwise steps.
//
// Same equations, saved quantities and hand-written backward as the Python step
// (src/rnnlab/cells/lstm_variants.py, layer_norm=True, no peepholes / coupling; its docstring
// holds the derivation) and the layer-norm backward of src/rnnlab/cells/layernorm.py. What
// changes is only how a step runs: no Python between steps, the recurrent matmul written into
// the saved buffer (rnnlab::gemm, gemm.h), the activations by ATen's vectorised kernels,
// and each row's layer norms, gate algebra and gradients in one pass over memory.
//
// Buffers (contiguous; G = 4 gate blocks of H):
//   xhat  (T, B, 4H)  in: the input projection W_ih x (no bias); overwritten with its LN x̂
//   rx    (T, B, 4)   r of the input LN per block        uhat (T, B, 4H)  û = LN(W_hh h_{t-1})
//   ru    (T, B, 4)   r of the recurrent LN              gates (T, B, 4H) i|f|g|o post-activation
//   hs, cs (T+1, B, H)  states                           chat (T, B, H), rc (T, B): LN of c_t
//   y     (T, B, H)   tanh(γ_c ĉ + β_c)
#include <ATen/OpMathType.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "gemm.h"
#include "workspace.h"

using at::Tensor;
using rnnlab::gemm;
using rnnlab::use_onednn;

namespace {

// v (n) ← (v − μ)/√(σ² + ε) in place; returns r = 1/√(σ² + ε). Sums in the op-math type (float
// for float32, as torch's own layer norm), written so that the compiler vectorises them.
template <typename T>
T normalize_inplace(T* v, int64_t n, double eps) {
  using A = at::opmath_type<T>;
  A s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += v[j];
  const A mu = s / A(n);
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < n; ++j) ss += (A(v[j]) - mu) * (A(v[j]) - mu);
  const A r = A(1) / std::sqrt(ss / A(n) + A(eps));
  for (int64_t j = 0; j < n; ++j) v[j] = T((A(v[j]) - mu) * r);
  return T(r);
}

// out (n) ← r (g − mean(g) − v̂ mean(g v̂)), the LN backward with g = grad ⊙ gain.
template <typename T>
void normalize_backward(const T* grad, const T* gain, const T* vhat, T r, T* out, int64_t n) {
  using A = at::opmath_type<T>;
  A m1 = 0, m2 = 0;
#pragma omp simd reduction(+ : m1, m2)
  for (int64_t j = 0; j < n; ++j) { const A g = A(grad[j]) * A(gain[j]); m1 += g; m2 += g * A(vhat[j]); }
  m1 /= A(n);
  m2 /= A(n);
  for (int64_t j = 0; j < n; ++j) out[j] = T(A(r) * (A(grad[j]) * A(gain[j]) - m1 - A(vhat[j]) * m2));
}

}  // namespace

constexpr int64_t kRowGrain = 8;   // batch rows per thread chunk (see fast_kernels.cpp)

std::vector<Tensor> ln_lstm_forward(Tensor xhat, const Tensor& bias, const Tensor& g_ih, const Tensor& g_hh,
                                    const Tensor& g_c, const Tensor& b_c, const Tensor& h0, const Tensor& c0,
                                    const Tensor& w_hh, double eps) {
  const int64_t T = xhat.size(0), B = xhat.size(1), G = xhat.size(2), H = G / 4;
  auto opt = xhat.options();
  using rnnlab::workspace;                                           // reused buffers (workspace.h)
  auto hs = workspace(0, {T + 1, B, H}, opt), cs = workspace(1, {T + 1, B, H}, opt);
  auto gates = workspace(2, {T, B, G}, opt), uhat = workspace(3, {T, B, G}, opt);
  auto rx = workspace(4, {T, B, 4}, opt), ru = workspace(5, {T, B, 4}, opt);
  auto chat = workspace(6, {T, B, H}, opt), rc = workspace(7, {T, B}, opt), y = workspace(8, {T, B, H}, opt);
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  const Tensor w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(xhat.scalar_type(), "ln_lstm_forward", [&] {
    const scalar_t *gi = g_ih.data_ptr<scalar_t>(), *gh = g_hh.data_ptr<scalar_t>(), *bb = bias.data_ptr<scalar_t>();
    const scalar_t *gc = g_c.data_ptr<scalar_t>(), *bc = b_c.data_ptr<scalar_t>();
    const bool whole = T > 0 && use_onednn(hs[0], w_hh_t);   // see fast_kernels.cpp (LSTM)
    for (int64_t t = 0; t < T; ++t) {
      // One parallel region per step, split by batch rows: each thread runs its rows' recurrent
      // matmul, layer norms, activations and cell update (nothing crosses rows within a step).
      // With oneDNN the matmul runs once for the whole batch before the region instead.
      Tensor u_t = uhat[t], g_t = gates[t], y_t = y[t], h_prev = hs[t], h_t = hs[t + 1];
      if (whole) gemm(u_t, h_prev, w_hh_t, false);                     // u = W_hh h_{t-1}
      scalar_t *xp = xhat[t].data_ptr<scalar_t>(), *up = u_t.data_ptr<scalar_t>();
      scalar_t *rxp = rx[t].data_ptr<scalar_t>(), *rup = ru[t].data_ptr<scalar_t>();
      scalar_t* ap = g_t.data_ptr<scalar_t>();
      const scalar_t* cprev = cs[t].data_ptr<scalar_t>();
      scalar_t *cp = cs[t + 1].data_ptr<scalar_t>(), *chp = chat[t].data_ptr<scalar_t>();
      scalar_t *rcp = rc[t].data_ptr<scalar_t>(), *yp = y_t.data_ptr<scalar_t>();
      at::parallel_for(0, B, kRowGrain, [&](int64_t b0, int64_t b1) {
        at::NoGradGuard no_grad;                                         // worker threads start with grad on
        const int64_t n = b1 - b0;
        Tensor u_rows = u_t.narrow(0, b0, n);
        if (!whole) at::mm_out(u_rows, h_prev.narrow(0, b0, n), w_hh_t); // u = W_hh h_{t-1}
        for (int64_t b = b0; b < b1; ++b) {
          for (int64_t k = 0; k < 4; ++k) {                              // LN per gate block
            rxp[b * 4 + k] = normalize_inplace(xp + b * G + k * H, H, eps);
            rup[b * 4 + k] = normalize_inplace(up + b * G + k * H, H, eps);
          }
          for (int64_t j = 0; j < G; ++j)                                // a = γ_ih x̂ + γ_hh û + b
            ap[b * G + j] = gi[j] * xp[b * G + j] + gh[j] * up[b * G + j] + bb[j];
        }
        // tanh(v) = 2σ(2v) − 1, as in fast_kernels.cpp: ATen's sigmoid is faster than its tanh
        for (int64_t b = b0; b < b1; ++b)
          for (int64_t j = 2 * H; j < 3 * H; ++j) ap[b * G + j] *= scalar_t(2);
        Tensor g_rows = g_t.narrow(0, b0, n);
        g_rows.sigmoid_();                                               // i, f, o; g slot σ(2a)
        for (int64_t b = b0; b < b1; ++b) {
          scalar_t* a = ap + b * G;
          for (int64_t j = 0; j < H; ++j) {
            a[2 * H + j] = scalar_t(2) * a[2 * H + j] - scalar_t(1);     // g = tanh(a_g)
            const scalar_t c = a[H + j] * cprev[b * H + j] + a[j] * a[2 * H + j];  // c = f c_{t-1} + i g
            cp[b * H + j] = c;
            chp[b * H + j] = c;
          }
          rcp[b] = normalize_inplace(chp + b * H, H, eps);              // ĉ
          for (int64_t j = 0; j < H; ++j) yp[b * H + j] = scalar_t(2) * (gc[j] * chp[b * H + j] + bc[j]);
        }
        Tensor y_rows = y_t.narrow(0, b0, n);
        y_rows.sigmoid_();
        for (int64_t k = b0 * H; k < b1 * H; ++k) yp[k] = scalar_t(2) * yp[k] - scalar_t(1);  // y = tanh(γ_c ĉ + β_c)
        Tensor h_rows = h_t.narrow(0, b0, n);
        at::mul_out(h_rows, g_rows.narrow(1, 3 * H, H), y_rows);         // h = o ⊙ y
      });
    }
  });
  return {hs, cs, gates, xhat, rx, uhat, ru, chat, rc, y};
}

std::vector<Tensor> ln_lstm_backward(const Tensor& d_out, const Tensor& d_h_last, const Tensor& d_c_last,
                                     const Tensor& g_ih, const Tensor& g_hh, const Tensor& g_c,
                                     const Tensor& w_hh, const Tensor& cs, const Tensor& gates,
                                     const Tensor& xhat, const Tensor& rx, const Tensor& uhat, const Tensor& ru,
                                     const Tensor& chat, const Tensor& rc, const Tensor& y) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
  auto opt = gates.options();
  auto dxw = rnnlab::workspace(9, {T, B, G}, opt), du = rnnlab::workspace(10, {T, B, G}, opt);
  auto dxa = at::empty({B, G}, opt), dz = at::empty({B, H}, opt);   // one step's ∂L/∂a, ∂L/∂z (scratch)
  // Parameter gradients summed step by step while the step's rows are in cache:
  // Σ da ⊙ x̂ (γ_ih), Σ da ⊙ û (γ_hh), Σ da (both biases), Σ dz ⊙ ĉ (γ_c), Σ dz (β_c).
  auto d_g_ih = at::zeros({G}, opt), d_g_hh = at::zeros({G}, opt), d_b = at::zeros({G}, opt);
  auto d_g_c = at::zeros({H}, opt), d_b_c = at::zeros({H}, opt);
  Tensor dh = d_h_last.clone(), dc = d_c_last.clone();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "ln_lstm_backward", [&] {
    scalar_t *agi = d_g_ih.data_ptr<scalar_t>(), *agh = d_g_hh.data_ptr<scalar_t>(), *ab = d_b.data_ptr<scalar_t>();
    scalar_t *agc = d_g_c.data_ptr<scalar_t>(), *abc = d_b_c.data_ptr<scalar_t>();
    const scalar_t *gi = g_ih.data_ptr<scalar_t>(), *gh = g_hh.data_ptr<scalar_t>(), *gc = g_c.data_ptr<scalar_t>();
    const bool whole = T > 0 && use_onednn(du[0], w_hh);
    for (int64_t t = T - 1; t >= 0; --t) {
      scalar_t *dhp = dh.data_ptr<scalar_t>(), *dcp = dc.data_ptr<scalar_t>();
      const scalar_t *dop = d_out[t].data_ptr<scalar_t>(), *ap = gates[t].data_ptr<scalar_t>();
      const scalar_t *cprev = cs[t].data_ptr<scalar_t>(), *yp = y[t].data_ptr<scalar_t>();
      const scalar_t *chp = chat[t].data_ptr<scalar_t>(), *rcp = rc[t].data_ptr<scalar_t>();
      const scalar_t *xp = xhat[t].data_ptr<scalar_t>(), *rxp = rx[t].data_ptr<scalar_t>();
      const scalar_t *up = uhat[t].data_ptr<scalar_t>(), *rup = ru[t].data_ptr<scalar_t>();
      scalar_t *dap = dxa.data_ptr<scalar_t>(), *dwp = dxw[t].data_ptr<scalar_t>();
      scalar_t *dup = du[t].data_ptr<scalar_t>(), *dzp = dz.data_ptr<scalar_t>();
      Tensor du_t = du[t];
      at::parallel_for(0, B, kRowGrain, [&](int64_t b0, int64_t b1) {
        at::NoGradGuard no_grad;
        std::vector<scalar_t> dcn(H);
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* a = ap + b * G;
          scalar_t* da = dap + b * G;
          for (int64_t j = 0; j < H; ++j) {
            const int64_t bj = b * H + j;
            const scalar_t dhj = dhp[bj] + dop[bj];                      // total ∂L/∂h_t
            const scalar_t o = a[3 * H + j], yv = yp[bj];
            da[3 * H + j] = dhj * yv * o * (1 - o);                      // do
            dzp[bj] = dhj * o * (1 - yv * yv);                           // dz
          }
          normalize_backward(dzp + b * H, gc, chp + b * H, rcp[b], dcn.data(), H);  // through LN(c)
          for (int64_t j = 0; j < H; ++j) {
            const int64_t bj = b * H + j;
            const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j];
            const scalar_t dct = dcp[bj] + dcn[j];                       // total ∂L/∂c_t
            da[j] = dct * g * i * (1 - i);                               // di
            da[H + j] = dct * cprev[bj] * f * (1 - f);                   // df
            da[2 * H + j] = dct * i * (1 - g * g);                       // dg
            dcp[bj] = dct * f;                                           // dc_{t-1}
          }
          for (int64_t k = 0; k < 4; ++k) {                              // through the two LNs
            const int64_t o = b * G + k * H;
            normalize_backward(da + k * H, gh + k * H, up + o, rup[b * 4 + k], dup + o, H);
            normalize_backward(da + k * H, gi + k * H, xp + o, rxp[b * 4 + k], dwp + o, H);
          }
        }
        if (whole) return;
        Tensor dh_rows = dh.narrow(0, b0, b1 - b0);                      // dh_{t-1} = du W_hh (these rows;
        at::mm_out(dh_rows, du_t.narrow(0, b0, b1 - b0), w_hh);          // their dh_t was read above)
      });
      if (whole) gemm(dh, du_t, w_hh, false);                            // every row's dh_t was read
      // The sums over rows, split by columns across threads (no two threads touch a column).
      at::parallel_for(0, G, 64, [&](int64_t j0, int64_t j1) {
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t *da = dap + b * G, *xh = xp + b * G, *uh = up + b * G;
          for (int64_t j = j0; j < j1; ++j) { agi[j] += da[j] * xh[j]; agh[j] += da[j] * uh[j]; ab[j] += da[j]; }
        }
      });
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t *dzb = dzp + b * H, *ch = chp + b * H;
        for (int64_t j = 0; j < H; ++j) { agc[j] += dzb[j] * ch[j]; abc[j] += dzb[j]; }
      }
    }
  });
  return {dxw, du, dh, dc, d_g_ih, d_g_hh, d_b, d_g_c, d_b_c};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ln_lstm_forward", &ln_lstm_forward, "layer-norm LSTM forward (time loop)");
  m.def("ln_lstm_backward", &ln_lstm_backward, "layer-norm LSTM backward (BPTT)");
  m.def("matmul", &rnnlab::matmul, "a @ b (+ bias) through gemm.h");
  m.def("release_workspace", &rnnlab::release_workspace);
  m.def("set_reuse", [](bool on) { rnnlab::reuse_enabled().store(on); });
  rnnlab::def_gemm_functions(m);
}
