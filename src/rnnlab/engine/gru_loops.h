// The GRU's inference and row-major training forward loops over units, written once over a vector
// type V: included by lstm_tiled.h
// once per instruction set, after lstm_tiled_loops.h (whose σ, tanh, panel packing, batch blocks
// and forward_over_units it uses), inside the same namespace and `#pragma GCC target` region. No
// include guard on purpose; nothing here includes anything.
//
// torch.nn's GRU (gates r, z, n in the rows of W_ih and W_hh, in that order):
//   r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
//   n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n).
// A tile is W units (one panel) × NB sequences with four sums per vector: r and z over input and
// state, and n's input part and state part apart, since r scales only the second.

// acc[A0][n] += Σ_k W[j0 + u, k] · v[n][k], acc[A1] with the z rows, acc[A2] with the n rows (pa: W
// (3H, K) packed by pack_infer<3>; v: NB rows of K floats, ld apart).
template <int NB, int A0, int A1, int A2>
inline void panel_product3(reg (&acc)[4][NB], const float* __restrict pa, const float* __restrict v, int64_t ld,
                           int64_t K) {
  constexpr int W = V::W;
  for (int64_t k = 0; k < K; ++k) {
    const float* __restrict pk = pa + k * 3 * W;
    const reg wr = V::load(pk), wz = V::load(pk + W), wn = V::load(pk + 2 * W);
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      const reg vk = splat(v[n * ld + k]);
      acc[A0][n] = V::fma(wr, vk, acc[A0][n]);
      acc[A1][n] = V::fma(wz, vk, acc[A1][n]);
      acc[A2][n] = V::fma(wn, vk, acc[A2][n]);
    }
  }
}

template <int NB>
inline void gru_infer_tile(const GruInferArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  const int64_t H = a.H, BH = a.B * H;
  const float* hstate = t == 0 ? a.h0 : a.mask ? a.h + (t & 1) * BH : a.out + (t - 1) * BH;   // (no mask: out holds h)
  const float* __restrict hp = hstate + b0 * H;                                   // h_{t-1}
  float* __restrict out = a.out + t * BH + b0 * H;
  float* __restrict hn = a.mask ? a.h + ((t + 1) & 1) * BH + b0 * H : out;
  reg acc[4][NB];                                         // r, z, n's input part, n's state part
  {
    const reg br = V::load(a.b_ih + j0), bz = V::load(a.b_ih + H + j0), bn = V::load(a.b_ih + 2 * H + j0);
    const reg hr = V::load(a.b_hh + j0), hz = V::load(a.b_hh + H + j0), hn_b = V::load(a.b_hh + 2 * H + j0);
    const float* __restrict xg = a.xg.p ? a.xg.at(t, b0) + j0 : nullptr;   // W_ih x_t, gate g at g·H
    const int64_t sb = a.xg.sb;
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      acc[0][n] = V::add(br, hr);
      acc[1][n] = V::add(bz, hz);
      acc[2][n] = bn;
      acc[3][n] = hn_b;
      if (xg != nullptr) {
        acc[0][n] = V::add(acc[0][n], V::load(xg + n * sb));
        acc[1][n] = V::add(acc[1][n], V::load(xg + n * sb + H));
        acc[2][n] = V::add(acc[2][n], V::load(xg + n * sb + 2 * H));
      }
    }
  }
  if (a.in.x.p != nullptr)                                // + W_ih x_t
    panel_product3<NB, 0, 1, 2>(acc, a.in.packed + 3 * a.in.I * j0, a.in.x.at(t, b0), a.in.x.sb, a.in.I);
  panel_product3<NB, 0, 1, 3>(acc, pa, hp, H, H);         // + W_hh h_{t-1}
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    const int64_t o = n * H + j0;
    const reg r = sigmoid(acc[0][n]), z = sigmoid(acc[1][n]);
    const reg nn = tanh_(V::fma(r, acc[3][n], acc[2][n]));   // n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    const reg h_prev = V::load(hp + o);
    const reg h = V::fma(z, V::sub(h_prev, nn), nn);          // h_t = n + z ⊙ (h_{t-1} − n)
    if (a.mask == nullptr) {
      V::store(hn + o, h);
    } else if (a.mask[t * a.B + b0 + n]) {
      V::store(hn + o, h);
      V::store(out + o, h);
    } else {                                                  // past the end: carry the state, output 0
      V::store(hn + o, h_prev);
      V::store(out + o, V::zero());
    }
  }
}

inline void gru_infer(const GruInferArgs& a) {
  forward_over_units<3>(a.w_hh, a.packed, a.T, a.B, a.H, a.threads,
                        [&](auto nb, const float* pa, int64_t t, int64_t j0, int64_t b0) {
                          gru_infer_tile<decltype(nb)::value>(a, pa, t, j0, b0);
                        },
                        a.in);
}

// The training forward: the same tile, keeping what fast_kernels.cpp's gru_backward reads, in the
// library loop's layout: gates (T, B, 3H) with W_ih x_t (+ b_ih, unless given apart) on entry and
// r, z, n on return, hn (T, B, H) = W_hn h_{t-1} + b_hn, hs (T+1, B, H) with h_0 in row 0. A masked
// (finished) sequence's h carries over, its gates are computed all the same, as the library loop's.
template <int NB>
inline void gru_rows_tile(const GruRowsArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  const int64_t H = a.H, G = 3 * H, BH = a.B * H;
  const float* __restrict hp = a.hs + t * BH + b0 * H;            // h_{t-1}
  float* __restrict ho = a.hs + (t + 1) * BH + b0 * H;
  float* __restrict hnb = a.hn + t * BH + b0 * H;
  float* __restrict gt = a.gates + (t * a.B + b0) * G + j0;       // W_ih x_t (+ b_ih) in, r z n out
  reg acc[4][NB];
  {
    const reg hr = V::load(a.b_hh + j0), hz = V::load(a.b_hh + H + j0), hn_b = V::load(a.b_hh + 2 * H + j0);
    const float* bi = a.b_ih;                                     // b_ih given apart, or null
    const reg br = bi ? V::add(hr, V::load(bi + j0)) : hr, bz = bi ? V::add(hz, V::load(bi + H + j0)) : hz;
    const reg bn = bi ? V::load(bi + 2 * H + j0) : V::zero();
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      acc[0][n] = V::add(V::load(gt + n * G), br);
      acc[1][n] = V::add(V::load(gt + n * G + H), bz);
      acc[2][n] = V::add(V::load(gt + n * G + 2 * H), bn);
      acc[3][n] = hn_b;
    }
  }
  panel_product3<NB, 0, 1, 3>(acc, pa, hp, H, H);         // + W_hh h_{t-1}
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    const int64_t o = n * H + j0;
    const reg r = sigmoid(acc[0][n]), z = sigmoid(acc[1][n]);
    const reg nn = tanh_(V::fma(r, acc[3][n], acc[2][n]));
    const reg h_prev = V::load(hp + o);
    V::store(gt + n * G, r);
    V::store(gt + n * G + H, z);
    V::store(gt + n * G + 2 * H, nn);
    V::store(hnb + o, acc[3][n]);
    const bool valid = a.mask == nullptr || a.mask[t * a.B + b0 + n];
    V::store(ho + o, valid ? V::fma(z, V::sub(h_prev, nn), nn) : h_prev);
  }
}

inline void gru_rows_forward(const GruRowsArgs& a) {
  forward_over_units<3>(a.w_hh, a.packed, a.T, a.B, a.H, a.threads,
                        [&](auto nb, const float* pa, int64_t t, int64_t j0, int64_t b0) {
                          gru_rows_tile<decltype(nb)::value>(a, pa, t, j0, b0);
                        });
}
