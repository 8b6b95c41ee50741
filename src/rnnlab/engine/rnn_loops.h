// The vanilla RNN's inference loop over units (also its training forward: the states are all it
// keeps), written once over a vector type V: included by lstm_tiled.h once per instruction set, after lstm_tiled_loops.h (σ-based tanh, panel packing,
// batch blocks, forward_over_units), inside the same namespace and `#pragma GCC target` region. No
// include guard on purpose; nothing here includes anything.
//
// torch.nn's RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh), or relu(·) with nonlinearity="relu".
// A tile is W units (one panel) × NB sequences, one sum per vector.

// acc[n] += Σ_k W[j0 + u, k] · v[n][k] (pa: W (H, K) packed by pack_infer<1>; v: NB rows of K
// floats, ld apart).
template <int NB>
inline void panel_product1(reg (&acc)[NB], const float* __restrict pa, const float* __restrict v, int64_t ld,
                           int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    const reg w = V::load(pa + k * V::W);
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[n] = V::fma(w, splat(v[n * ld + k]), acc[n]);
  }
}

template <int NB>
inline void rnn_infer_tile(const RnnInferArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  const int64_t H = a.H, BH = a.B * H;
  const bool in_out = a.mask == nullptr || a.carry;      // out holds the states (h_t, carried when masked)
  const float* hstate = t == 0 ? a.h0 : in_out ? a.out + (t - 1) * BH : a.h + (t & 1) * BH;
  const float* __restrict hp = hstate + b0 * H;                                   // h_{t-1}
  float* __restrict out = a.out + t * BH + b0 * H;
  float* __restrict hn = in_out ? out : a.h + ((t + 1) & 1) * BH + b0 * H;
  reg acc[NB];
  const reg b = a.bias ? V::load(a.bias + j0) : V::zero();
  const float* __restrict xg = a.xg.p ? a.xg.at(t, b0) + j0 : nullptr;   // W_ih x_t
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) acc[n] = xg != nullptr ? V::add(b, V::load(xg + n * a.xg.sb)) : b;
  if (a.in.x.p != nullptr)                                // + W_ih x_t
    panel_product1<NB>(acc, a.in.packed + a.in.I * j0, a.in.x.at(t, b0), a.in.x.sb, a.in.I);
  panel_product1<NB>(acc, pa, hp, H, H);                  // + W_hh h_{t-1}
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    const int64_t o = n * H + j0;
    const reg h = a.relu ? V::max(V::zero(), acc[n]) : tanh_(acc[n]);   // (max passes a NaN sum: second operand)
    if (a.mask == nullptr || a.mask[t * a.B + b0 + n]) {
      V::store(hn + o, h);
      if (!in_out) V::store(out + o, h);
    } else {                                                  // past the end: carry the state, output 0
      V::store(hn + o, V::load(hp + o));
      if (!in_out) V::store(out + o, V::zero());
    }
  }
}

inline void rnn_infer(const RnnInferArgs& a) {
  forward_over_units<1>(a.w_hh, a.packed, a.T, a.B, a.H, a.threads,
                        [&](auto nb, const float* pa, int64_t t, int64_t j0, int64_t b0) {
                          rnn_infer_tile<decltype(nb)::value>(a, pa, t, j0, b0);
                        },
                        a.in);
}
