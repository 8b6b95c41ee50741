// The unit-major LSTM loops of lstm_tiled.h, written once over a vector type V.
//
// No include guard on purpose: lstm_tiled.h includes this file once per instruction set, each
// time inside its own namespace and `#pragma GCC target` region, after defining there a struct V
// (the register type `reg`, its width W, how many accumulators fit in the register file, and the
// handful of operations used below). Nothing here includes anything.
//
// Layout (see lstm_tiled.h): every per-step quantity is stored unit-major, (units, Bp) with the
// batch padded to Bp, a multiple of V::W, so that a vector holds W batch columns of one unit.
// The gate rows are W_ih/W_hh's own rows (i|f|g|o blocks of H), each a run of T·Bp floats.

using reg = V::reg;

inline reg splat(float x) { return V::set1(x); }

// σ(x) = 1 / (1 + e^{−x}), e^z by Cody–Waite reduction z = m ln2 + r and Cephes' degree-6
// polynomial for e^r (within 2 ulp of expf), as the streaming kernel's scalar version. The clamp
// keeps 2^m finite and passes NaN through (max/min return their second operand on NaN, so the
// input goes second): a diverging model stays visibly non-finite. The reciprocal is the CPU's
// estimate (2^-14 with AVX-512, 1.5·2^-12 with AVX2) refined by one Newton step, q(2 − dq), to
// within a few ulp: cheaper than a vector division, which issues once every several cycles.
inline reg sigmoid(reg x) {
  reg z = V::sub(V::zero(), x);
  z = V::min(splat(88.0f), V::max(splat(-87.0f), z));
  const reg m = V::round(V::mul(z, splat(1.44269504088896341f)));
  reg r = V::fma(m, splat(-0.693359375f), z);
  r = V::fma(m, splat(2.12194440e-4f), r);
  reg p = splat(1.9875691500e-4f);
  p = V::fma(p, r, splat(1.3981999507e-3f));
  p = V::fma(p, r, splat(8.3334519073e-3f));
  p = V::fma(p, r, splat(4.1665795894e-2f));
  p = V::fma(p, r, splat(1.6666665459e-1f));
  p = V::fma(p, r, splat(5.0000001201e-1f));
  p = V::fma(V::mul(p, r), r, V::add(r, splat(1.0f)));
  const reg d = V::add(splat(1.0f), V::ldexp(p, m));
  const reg q = V::rcp(d);
  return V::mul(q, V::fnma(d, q, splat(2.0f)));
}

// tanh(x) = 2σ(2x) − 1, as the other kernels.
inline reg tanh_(reg x) { return V::fma(splat(2.0f), sigmoid(V::add(x, x)), splat(-1.0f)); }

// The cell's step for one vector, from the four gates' pre-activations and c_{t-1}: every forward
// tile below runs it, and h_t = o ⊙ tanh(c_t) is theirs to form or carry.
struct Cell {
  reg i, f, g, o, c, th;   // the gates after activation, c_t, tanh(c_t)
};
// (always inlined: GCC otherwise calls it from some tiles, passing the six vectors through memory)
[[gnu::always_inline]] inline Cell cell_step(reg ai, reg af, reg ag, reg ao, reg c_prev) {
  Cell s;
  s.i = sigmoid(ai);
  s.f = sigmoid(af);
  s.g = tanh_(ag);
  s.o = sigmoid(ao);
  s.c = V::fma(s.f, c_prev, V::mul(s.i, s.g));            // c_t = f ⊙ c_{t-1} + i ⊙ g
  s.th = tanh_(s.c);
  return s;
}

// Register blocking. Forward: a tile is U units × NB vectors of batch columns for all four gates
// (4·U·NB accumulators); backward: R units × NB vectors of ∂L/∂h (R·NB accumulators).
constexpr int kMaxNB = V::kMaxNB;
constexpr int fwd_units(int nb) { return V::kAcc / (4 * nb) > 0 ? V::kAcc / (4 * nb) : 1; }
constexpr int bwd_units(int nb) { return V::kAcc / nb > 0 ? V::kAcc / nb : 1; }

// The register-tiled product both passes use: acc[r][n] += Σ_k pa[k·R + r] · b[k·ldb + n·W] over
// k < K (pa: a packed panel, k-major; b: K rows of NB vectors, ldb apart).
template <int R, int NB>
inline void tile_product(reg (&acc)[R][NB], const float* __restrict pa, const float* __restrict b, int64_t ldb,
                         int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    reg bv[NB];
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) bv[n] = V::load(b + k * ldb + n * V::W);
    const float* __restrict ak = pa + k * R;
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const reg w = splat(ak[r]);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[r][n] = V::fma(w, bv[n], acc[r][n]);
    }
  }
}

// f(j0, n) for the panels of units [u0, u1): n = `width` units while they fit, then single units.
// A panel starting at unit j0 sits at offset 4·H·j0 of a packed weight buffer (each unit
// contributes 4H floats in either pass), so packing and use agree on where it is.
template <class F>
inline void for_each_panel(int64_t u0, int64_t u1, int width, const F& f) {
  for (int64_t j0 = u0; j0 < u1;) {
    const int64_t n = j0 + width <= u1 ? width : 1;
    f(j0, n);
    j0 += n;
  }
}

// tile(std::integral_constant<int, n>{}, pa, j0, c0) for every register tile of units [u0, u1):
// panels of `Units` units (n = Units, or n = 1 for the units left over) × blocks of NB vectors of
// columns; pa is the panel's packed weights.
template <int Units, int NB, class F>
inline void for_each_tile(const float* packed, int64_t H, int64_t u0, int64_t u1, int64_t Bp, const F& tile) {
  for_each_panel(u0, u1, Units, [&](int64_t j0, int64_t n) {
    const float* pa = packed + 4 * H * j0;
    for (int64_t c0 = 0; c0 < Bp; c0 += NB * V::W) {
      if (n == Units) tile(std::integral_constant<int, Units>{}, pa, j0, c0);
      else tile(std::integral_constant<int, 1>{}, pa, j0, c0);
    }
  });
}

// f(std::integral_constant<int, NB>) with NB = column_block(vectors, kMaxNB): the loops are
// compiled for each column blocking, chosen here from the padded batch.
template <class F>
inline void with_column_block(int64_t vectors, const F& f) {
  switch (column_block(vectors, kMaxNB)) {
    case 4: if constexpr (kMaxNB >= 4) { f(std::integral_constant<int, 4>{}); return; } break;
    case 3: if constexpr (kMaxNB >= 3) { f(std::integral_constant<int, 3>{}); return; } break;
    case 2: f(std::integral_constant<int, 2>{}); return;
    default: break;
  }
  f(std::integral_constant<int, 1>{});
}

// ------------------------------------------------------------------------------- forward
// One step of U units (j0..j0+U−1) × NB·W columns from c0: the recurrent product for the four
// gates of each unit (pa: its packed W_hh rows, k-major, 4U per k), added to the input
// projection and bias, the activations and the cell update, all in registers; then the gates,
// c_t, tanh(c_t) and h_t are stored.
template <int U, int NB>
inline void fwd_tile(const FwdArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t c0) {
  constexpr int R = 4 * U;
  const int64_t H = a.H, Bp = a.Bp, rs = a.T * a.Bp;      // rs: stride between gate rows
  float* rows[R];
  reg acc[R][NB];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
    const int64_t row = (r % 4) * H + j0 + r / 4;          // tile row r = gate r%4 of unit r/4
    rows[r] = a.xg + row * rs + t * Bp + c0;
    const reg b = splat(a.bias ? a.bias[row] : 0.0f);
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[r][n] = V::add(V::load(rows[r] + n * V::W), b);
  }
  tile_product<R, NB>(acc, pa, a.hT + t * H * Bp + c0, Bp, H);   // + W_hh h_{t-1} (row k = unit k)
  const float* cp = a.cs + t * H * Bp + c0;
  float* cn = a.cs + (t + 1) * H * Bp + c0;
  float* tc = a.tcs + t * H * Bp + c0;
  float* hn = a.hT + (t + 1) * H * Bp + c0;
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    const int64_t off = (j0 + u) * Bp;
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      const int64_t o = off + n * V::W;
      const Cell s = cell_step(acc[4 * u][n], acc[4 * u + 1][n], acc[4 * u + 2][n], acc[4 * u + 3][n],
                               V::load(cp + o));
      V::store(rows[4 * u] + n * V::W, s.i);
      V::store(rows[4 * u + 1] + n * V::W, s.f);
      V::store(rows[4 * u + 2] + n * V::W, s.g);
      V::store(rows[4 * u + 3] + n * V::W, s.o);
      V::store(cn + o, s.c);
      V::store(tc + o, s.th);
      V::store(hn + o, V::mul(s.o, s.th));                      // h_t = o ⊙ tanh(c_t)
    }
  }
}

// Units [u0, u1) of W_hh (4H, H) packed for fwd_tile: panels of U units (then single units), each
// panel k-major with its 4U rows (unit-major, gates i f g o) contiguous; a panel starting at unit
// j0 sits at offset 4·H·j0.
inline void pack_forward(const float* __restrict w, float* __restrict out, int64_t H, int64_t u0, int64_t u1,
                         int U) {
  for_each_panel(u0, u1, U, [&](int64_t j0, int64_t n) {
    float* p = out + 4 * H * j0;
    for (int64_t k = 0; k < H; ++k)
      for (int64_t u = 0; u < n; ++u)
        for (int64_t g = 0; g < 4; ++g) p[(k * n + u) * 4 + g] = w[(g * H + j0 + u) * H + k];
  });
}

template <int NB>
void forward_nb(const FwdArgs& a) {
  constexpr int U = fwd_units(NB);
  run_team(a.threads, [&](int tid, int nt) {
    int64_t u0, u1;
    unit_range(a.H, U, tid, nt, &u0, &u1);
    pack_forward(a.w_hh, a.packed, a.H, u0, u1, U);
    for (int64_t t = 0; t < a.T; ++t) {
      for_each_tile<U, NB>(a.packed, a.H, u0, u1, a.Bp, [&](auto u, const float* pa, int64_t j0, int64_t c0) {
        fwd_tile<decltype(u)::value, NB>(a, pa, t, j0, c0);
      });
      team_barrier(nt);                                   // h_t complete before step t+1 reads it
    }
  });
}

inline void forward(const FwdArgs& a) {
  with_column_block(a.Bp / V::W, [&](auto nb) { forward_nb<decltype(nb)::value>(a); });
}

// ------------------------------------------------------------------------------ backward
// ∂L/∂h_{t-1} for R units × NB·W columns: Σ_k W_hh[k, j] da_t[k], k over the 4H gate rows
// (pa: W_hh's columns j0..j0+R−1, k-major).
template <int R, int NB>
inline void bwd_tile(const BwdArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t c0) {
  const int64_t Bp = a.Bp, rs = a.T * a.Bp, G = 4 * a.H;
  reg acc[R][NB];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[r][n] = V::zero();
  tile_product<R, NB>(acc, pa, a.da + t * Bp + c0, rs, G);          // da_t's row k is gate row k
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) V::store(a.dh + (j0 + r) * Bp + c0 + n * V::W, acc[r][n]);
}

// Columns j of W_hh (4H, H) for units [u0, u1), packed for bwd_tile: panels of R units (then
// single units), k-major over the 4H rows; a panel starting at unit j0 sits at offset 4·H·j0.
inline void pack_backward(const float* __restrict w, float* __restrict out, int64_t H, int64_t u0, int64_t u1,
                          int R) {
  for_each_panel(u0, u1, R, [&](int64_t j0, int64_t n) {
    float* p = out + 4 * H * j0;
    for (int64_t k = 0; k < 4 * H; ++k)
      for (int64_t r = 0; r < n; ++r) p[k * n + r] = w[k * H + j0 + r];
  });
}

// The gate gradients of step t for units [u0, u1), all columns: the reference's equations
// (cells/lstm.py), vectorised over the batch. dh holds ∂L/∂h_t from step t+1 (or the final
// state's gradient); d_out adds the output's. Leaves ∂L/∂c_{t-1} in dc.
inline void bwd_pointwise(const BwdArgs& a, int64_t t, int64_t u0, int64_t u1, float* rec_h, float* rec_c) {
  const int64_t H = a.H, Bp = a.Bp, rs = a.T * a.Bp;
  const float* dout = a.d_out + t * H * Bp;
  const float* tc = a.tcs + t * H * Bp;
  const float* cp = a.cs + t * H * Bp;                    // c_{t-1}
  const reg one = splat(1.0f);
  for (int64_t j = u0; j < u1; ++j) {
    for (int64_t c0 = 0; c0 < Bp; c0 += V::W) {
      const int64_t o = j * Bp + c0;
      const int64_t gi = j * rs + t * Bp + c0, step = H * rs;   // gate rows i, f, g, o of unit j
      const reg dh = V::add(V::load(a.dh + o), V::load(dout + o));   // total ∂L/∂h_t
      const reg i = V::load(a.gates + gi), f = V::load(a.gates + gi + step);
      const reg g = V::load(a.gates + gi + 2 * step), og = V::load(a.gates + gi + 3 * step);
      const reg th = V::load(tc + o);
      const reg dct = V::fma(V::mul(dh, og), V::fnma(th, th, one), V::load(a.dc + o));   // dc + dh·o·(1−th²)
      V::store(a.da + gi + 3 * step, V::mul(V::mul(dh, th), V::mul(og, V::sub(one, og))));       // do
      V::store(a.da + gi, V::mul(V::mul(dct, g), V::mul(i, V::sub(one, i))));                      // di
      V::store(a.da + gi + step, V::mul(V::mul(dct, V::load(cp + o)), V::mul(f, V::sub(one, f))));  // df
      V::store(a.da + gi + 2 * step, V::mul(V::mul(dct, i), V::fnma(g, g, one)));                  // dg
      V::store(a.dc + o, V::mul(dct, f));                 // ∂L/∂c_{t-1} = dc_total ⊙ f
      if (rec_h) {
        V::store(rec_h + c0, V::fma(dh, dh, V::load(rec_h + c0)));
        V::store(rec_c + c0, V::fma(dct, dct, V::load(rec_c + c0)));
      }
    }
  }
}

template <int NB>
void backward_nb(const BwdArgs& a) {
  constexpr int R = bwd_units(NB);
  run_team(a.threads, [&](int tid, int nt) {
    int64_t u0, u1;
    unit_range(a.H, R, tid, nt, &u0, &u1);
    pack_backward(a.w_hh, a.packed, a.H, u0, u1, R);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      float* rh = a.rec_h ? a.rec_h + (t * a.threads + tid) * a.Bp : nullptr;   // this thread's partial sums
      float* rc = a.rec_c ? a.rec_c + (t * a.threads + tid) * a.Bp : nullptr;
      bwd_pointwise(a, t, u0, u1, rh, rc);
      team_barrier(nt);                                   // every gate gradient of step t is in da
      // ∂L/∂h_{t-1} = da_t W_hh, this thread's units
      for_each_tile<R, NB>(a.packed, a.H, u0, u1, a.Bp, [&](auto r, const float* pa, int64_t j0, int64_t c0) {
        bwd_tile<decltype(r)::value, NB>(a, pa, t, j0, c0);
      });
      // no barrier: step t−1's pointwise reads only this thread's units of dh, and writes da_{t−1}
      // and dc rows that nobody reads before the next barrier
    }
  });
}

inline void backward(const BwdArgs& a) {
  with_column_block(a.Bp / V::W, [&](auto nb) { backward_nb<decltype(nb)::value>(a); });
}

// ----------------------------------------------------------------------------- inference
// Without a gradient to come only h_t and c_t are kept, and the loop runs row-major: a vector
// holds W consecutive units of one sequence rather than one unit of W sequences, so vectors are
// full at any batch size and the states need no transposing. A tile is W units (one panel) × NB
// sequences, its four gates' sums in 4·NB registers; W_hh is packed per panel, k-major, the
// panel's four gate rows (i f g o, W floats each) contiguous for every k.
constexpr int kInferMaxNB = V::kAcc / 4;

// acc[g][n] += Σ_k W[g·H + j0 + u, k] · v[n][k] for the W units u of one panel (pa: W (4H, K)
// packed by pack_infer) and NB sequences (v: NB rows of K floats, ld apart): W_hh and h_{t-1}, or
// W_ih and x_t.
template <int NB>
inline void panel_product(reg (&acc)[4][NB], const float* __restrict pa, const float* __restrict v, int64_t ld,
                          int64_t K) {
  constexpr int W = V::W;
  for (int64_t k = 0; k < K; ++k) {
    const float* __restrict pk = pa + k * 4 * W;
    const reg wi = V::load(pk), wf = V::load(pk + W), wg = V::load(pk + 2 * W), wo = V::load(pk + 3 * W);
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      const reg vk = splat(v[n * ld + k]);
      acc[0][n] = V::fma(wi, vk, acc[0][n]);
      acc[1][n] = V::fma(wf, vk, acc[1][n]);
      acc[2][n] = V::fma(wg, vk, acc[2][n]);
      acc[3][n] = V::fma(wo, vk, acc[3][n]);
    }
  }
}

template <int NB>
inline void infer_tile(const InferArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  const int64_t H = a.H, BH = a.B * H;
  const float* hstate = t == 0 ? a.h0 : a.mask ? a.h + (t & 1) * BH : a.out + (t - 1) * BH;   // (no mask: out holds h)
  const float* __restrict hp = hstate + b0 * H;                                   // h_{t-1}
  const float* __restrict cp = (t == 0 ? a.c0 : a.c + (t & 1) * BH) + b0 * H;     // c_{t-1}
  float* __restrict cn = a.c + ((t + 1) & 1) * BH + b0 * H;
  float* __restrict out = a.out + t * BH + b0 * H;
  float* __restrict hn = a.mask ? a.h + ((t + 1) & 1) * BH + b0 * H : out;
  reg acc[4][NB];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const reg b = a.bias ? V::load(a.bias + g * H + j0) : V::zero();
    if (a.in.x.p != nullptr) {                                    // W_ih x_t formed here, below
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[g][n] = b;
    } else {
      const float* __restrict xg = a.xg.at(t, b0) + j0;             // W_ih x_t, gate g at g·H
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[g][n] = V::add(V::load(xg + n * a.xg.sb + g * H), b);
    }
  }
  if (a.in.x.p != nullptr)                                        // + W_ih x_t
    panel_product<NB>(acc, a.in.packed + 4 * a.in.I * j0, a.in.x.at(t, b0), a.in.x.sb, a.in.I);
  panel_product<NB>(acc, pa, hp, H, H);                   // + W_hh h_{t-1}
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    const int64_t o = n * H + j0;
    const Cell s = cell_step(acc[0][n], acc[1][n], acc[2][n], acc[3][n], V::load(cp + o));
    const reg h = V::mul(s.o, s.th);                          // h_t = o ⊙ tanh(c_t)
    if (a.mask == nullptr) {
      V::store(cn + o, s.c);
      V::store(hn + o, h);
    } else if (a.mask[t * a.B + b0 + n]) {
      V::store(cn + o, s.c);
      V::store(hn + o, h);
      V::store(out + o, h);
    } else {                                                  // past the end: carry the state, output 0
      V::store(cn + o, V::load(cp + o));
      V::store(hn + o, V::load(hp + o));
      V::store(out + o, V::zero());
    }
  }
}

// f(std::integral_constant<int, n>{}) for a count 1 ≤ n ≤ N known at run time: the tiles of a block
// of n sequences are compiled for each n up to N.
template <int N, class F>
inline void with_count(int n, const F& f) {
  if constexpr (N >= 1) {
    if (n == N) f(std::integral_constant<int, N>{});
    else with_count<N - 1>(n, f);
  }
}

// Panels [u0, u1) (W units each, u0 and u1 multiples of W) of W (NG·H, K), the NG gates' rows of
// W_hh or W_ih, packed for panel_product: k-major, the panel's NG gate rows (W floats each)
// contiguous for every k. Every call packs anew, so the W × W blocks are transposed in registers
// (V::transpose) rather than one float at a time; the last K mod W columns one at a time.
template <int NG = 4>
inline void pack_infer(const float* __restrict w, float* __restrict out, int64_t H, int64_t K, int64_t u0,
                       int64_t u1) {
  constexpr int W = V::W;
  const int64_t full = K / W * W;
  for (int64_t j0 = u0; j0 < u1; j0 += W) {
    float* p = out + NG * K * j0;
    for (int64_t k0 = 0; k0 < full; k0 += W)
      for (int64_t g = 0; g < NG; ++g) V::transpose(w + (g * H + j0) * K + k0, K, p + (k0 * NG + g) * W, NG * W);
    for (int64_t k = full; k < K; ++k)
      for (int64_t g = 0; g < NG; ++g)
        for (int64_t u = 0; u < W; ++u) p[(k * NG + g) * W + u] = w[(g * H + j0 + u) * K + k];
  }
}

// The batch in blocks of at most N sequences, as even as they come (8 → 4 + 4, not 6 + 2): f(b0, n) for
// each (B > 0).
template <int N, class F>
inline void for_each_batch_block(int64_t B, const F& f) {
  const int64_t blocks = (B + N - 1) / N, base = B / blocks, extra = B % blocks;
  for (int64_t blk = 0, b0 = 0; blk < blocks; ++blk) {
    const int n = static_cast<int>(base + (blk < extra));
    f(b0, n);
    b0 += n;
  }
}

// The forward time loop over units that the inference and row-major training loops share: each
// thread packs its panels of W_hh (pack_infer; and of W_ih, given a fused input), then at every step runs
// tile(nb, pa, t, j0, b0) for each of its panels (pa, from unit j0) × each block of nb ≤
// kInferMaxNB sequences from b0 (nb a std::integral_constant); the threads meet once per step. NG:
// the cell's gates (4 for the LSTM, 3 for the GRU, 1 for the vanilla RNN).
template <int NG = 4, class Tile>
inline void forward_over_units(const float* w_hh, float* packed, int64_t T, int64_t B, int64_t H, int threads,
                               const Tile& tile, const FusedInput& in = {}) {
  if (B == 0) return;                                     // (no blocks to divide the batch into)
  run_team(threads, [&](int tid, int nt) {
    int64_t u0, u1;
    unit_range(H, V::W, tid, nt, &u0, &u1);
    pack_infer<NG>(w_hh, packed, H, H, u0, u1);           // this thread's panels: only it reads them
    if (in.x.p != nullptr) pack_infer<NG>(in.w_ih, in.packed, H, in.I, u0, u1);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j0 = u0; j0 < u1; j0 += V::W)
        for_each_batch_block<kInferMaxNB>(B, [&](int64_t b0, int n) {
          with_count<kInferMaxNB>(n, [&](auto nb) { tile(nb, packed + NG * H * j0, t, j0, b0); });
        });
      team_barrier(nt);                                   // h_t complete before step t+1 reads it
    }
  });
}

inline void infer(const InferArgs& a) {
  forward_over_units(a.w_hh, a.packed, a.T, a.B, a.H, a.threads,
                     [&](auto nb, const float* pa, int64_t t, int64_t j0, int64_t b0) {
                       infer_tile<decltype(nb)::value>(a, pa, t, j0, b0);
                     },
                     a.in);
}

// ------------------------------------------------------------------ row-major training loop
// The inference loop's tiles with everything backward needs kept, in the row-major loop's own
// layout (fast_kernels.cpp's lstm_forward / lstm_backward: gates (T, B, 4H) after activation, hs
// and cs (T+1, B, H), tanh(c_t) (T, B, H)), so either backward reads either forward's buffers.
// For small batches, where the unit-major tiles' vectors of sequences run half empty or the
// library's per-step GEMM is mostly call overhead.
template <int NB>
inline void rows_fwd_tile(const RowFwdArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  const int64_t H = a.H, G = 4 * H, BH = a.B * H;
  const float* __restrict hp = a.hs + t * BH + b0 * H;            // h_{t-1}
  const float* __restrict cp = a.cs + t * BH + b0 * H;            // c_{t-1}
  float* __restrict hn = a.hs + (t + 1) * BH + b0 * H;
  float* __restrict cn = a.cs + (t + 1) * BH + b0 * H;
  float* __restrict tc = a.tcs + t * BH + b0 * H;
  float* __restrict gt = a.gates + (t * a.B + b0) * G + j0;       // W_ih x_t (+ b) in, gates out
  reg acc[4][NB];
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const reg b = a.bias ? V::load(a.bias + g * H + j0) : V::zero();
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[g][n] = V::add(V::load(gt + n * G + g * H), b);
  }
  panel_product<NB>(acc, pa, hp, H, H);                           // + W_hh h_{t-1}
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    const int64_t o = n * H + j0;
    const Cell s = cell_step(acc[0][n], acc[1][n], acc[2][n], acc[3][n], V::load(cp + o));
    V::store(gt + n * G, s.i);
    V::store(gt + n * G + H, s.f);
    V::store(gt + n * G + 2 * H, s.g);
    V::store(gt + n * G + 3 * H, s.o);
    V::store(tc + o, s.th);
    if (a.mask == nullptr || a.mask[t * a.B + b0 + n]) {
      V::store(cn + o, s.c);
      V::store(hn + o, V::mul(s.o, s.th));                          // h_t = o ⊙ tanh(c_t)
    } else {                                                        // past the end: carry the state
      V::store(cn + o, V::load(cp + o));
      V::store(hn + o, V::load(hp + o));
    }
  }
}

inline void rows_forward(const RowFwdArgs& a) {
  forward_over_units(a.w_hh, a.packed, a.T, a.B, a.H, a.threads,
                     [&](auto nb, const float* pa, int64_t t, int64_t j0, int64_t b0) {
                       rows_fwd_tile<decltype(nb)::value>(a, pa, t, j0, b0);
                     });
}

// Backward: ∂L/∂h_{t-1} = da_t W_hh for P panels of W units × NB sequences, Σ over the 4H gate
// rows k (pa: the panels' columns of W_hh, k-major, packed by pack_rows_backward); stored only for
// valid sequences (an invalid step passes ∂L/∂h through, as the row-major loop).
constexpr int kRowsBwdPanels = 2, kRowsBwdMaxNB = V::kAcc / kRowsBwdPanels;

template <int P, int NB>
inline void rows_bwd_tile(const RowBwdArgs& a, const float* __restrict pa, int64_t t, int64_t j0, int64_t b0) {
  constexpr int W = V::W;
  const int64_t H = a.H, G = 4 * H;
  const float* __restrict da = a.da + (t * a.B + b0) * G;
  reg acc[P][NB];
#pragma GCC unroll 4
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) acc[p][n] = V::zero();
  for (int64_t k = 0; k < G; ++k) {
    reg w[P];
#pragma GCC unroll 4
    for (int p = 0; p < P; ++p) w[p] = V::load(pa + (p * G + k) * W);
#pragma GCC unroll 16
    for (int n = 0; n < NB; ++n) {
      const reg d = splat(da[n * G + k]);
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) acc[p][n] = V::fma(w[p], d, acc[p][n]);
    }
  }
#pragma GCC unroll 16
  for (int n = 0; n < NB; ++n)
    if (a.mask == nullptr || a.mask[t * a.B + b0 + n])
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) V::store(a.dh + (b0 + n) * H + j0 + p * W, acc[p][n]);
}

// Columns [u0, u1) of W_hh (4H, H) (u0, u1 multiples of W) packed for rows_bwd_tile: each panel of
// W units k-major, W floats per gate row k; the panel starting at unit j0 sits at offset 4·H·j0,
// so P consecutive panels are 4H·W floats apart.
inline void pack_rows_backward(const float* __restrict w, float* __restrict out, int64_t H, int64_t u0, int64_t u1) {
  constexpr int W = V::W;
  for (int64_t j0 = u0; j0 < u1; j0 += W) {
    float* p = out + 4 * H * j0;
    for (int64_t k = 0; k < 4 * H; ++k)
      for (int u = 0; u < W; ++u) p[k * W + u] = w[k * H + j0 + u];
  }
}

// The gate gradients of step t for units [u0, u1) of every sequence: bwd_pointwise's equations
// in the row-major layout. dh holds ∂L/∂h_t from step t+1; d_out adds the output's. A step past
// a sequence's end has zero gate gradients and passes ∂L/∂h (with the output's added) and ∂L/∂c on.
inline void rows_bwd_pointwise(const RowBwdArgs& a, int64_t t, int64_t u0, int64_t u1) {
  const int64_t H = a.H, G = 4 * H, BH = a.B * H;
  const float* dout = a.d_out + t * BH;
  const float* tc = a.tcs + t * BH;
  const float* cp = a.cs + t * BH;                        // c_{t-1}
  const reg one = splat(1.0f);
  for (int64_t b = 0; b < a.B; ++b) {
    const bool valid = a.mask == nullptr || a.mask[t * a.B + b];
    const float* gt = a.gates + (t * a.B + b) * G;
    float* d = a.da + (t * a.B + b) * G;
    for (int64_t j = u0; j < u1; j += V::W) {
      const int64_t o = b * H + j;
      const reg dh = V::add(V::load(a.dh + o), V::load(dout + o));   // total ∂L/∂h_t
      if (!valid) {
        V::store(a.dh + o, dh);
        for (int g = 0; g < 4; ++g) V::store(d + g * H + j, V::zero());
        continue;
      }
      const reg i = V::load(gt + j), f = V::load(gt + H + j), g = V::load(gt + 2 * H + j), og = V::load(gt + 3 * H + j);
      const reg th = V::load(tc + o);
      const reg dct = V::fma(V::mul(dh, og), V::fnma(th, th, one), V::load(a.dc + o));   // dc + dh·o·(1−th²)
      V::store(d + 3 * H + j, V::mul(V::mul(dh, th), V::mul(og, V::sub(one, og))));        // do
      V::store(d + j, V::mul(V::mul(dct, g), V::mul(i, V::sub(one, i))));                   // di
      V::store(d + H + j, V::mul(V::mul(dct, V::load(cp + o)), V::mul(f, V::sub(one, f)))); // df
      V::store(d + 2 * H + j, V::mul(V::mul(dct, i), V::fnma(g, g, one)));                 // dg
      V::store(a.dc + o, V::mul(dct, f));                 // ∂L/∂c_{t-1} = dc_total ⊙ f
    }
  }
}

inline void rows_backward(const RowBwdArgs& a) {
  if (a.B == 0) return;
  constexpr int P = kRowsBwdPanels;
  run_team(a.threads, [&](int tid, int nt) {
    int64_t u0, u1;
    unit_range(a.H, V::W, tid, nt, &u0, &u1);
    pack_rows_backward(a.w_hh, a.packed, a.H, u0, u1);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      rows_bwd_pointwise(a, t, u0, u1);
      team_barrier(nt);                                   // every gate gradient of step t is in da
      for (int64_t j0 = u0; j0 < u1;) {
        const bool pair = j0 + P * V::W <= u1;
        for_each_batch_block<kRowsBwdMaxNB>(a.B, [&](int64_t b0, int n) {
          with_count<kRowsBwdMaxNB>(n, [&](auto nb) {
            constexpr int NB = decltype(nb)::value;
            if (pair) rows_bwd_tile<P, NB>(a, a.packed + 4 * a.H * j0, t, j0, b0);
            else rows_bwd_tile<1, NB>(a, a.packed + 4 * a.H * j0, t, j0, b0);
          });
        });
        j0 += pair ? P * V::W : V::W;
      }
      // no barrier: step t−1's pointwise reads only this thread's units of dh (written just now)
      // and writes rows of da_{t−1} and dc that nobody reads before the next barrier
    }
  });
}
