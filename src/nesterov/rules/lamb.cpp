// LAMB (rules/lamb.py, `update`) restated as one C++ kernel for CPU: the cpp backend (engine/cpp_kernels.py).
//
// Why a hand-written kernel: see rules/lars.cpp. Per tensor, each thread updates the moments of its slice,
// keeps the update direction r in a scratch buffer of its own and sums ‖w‖² and ‖r‖² (in double); after the
// barrier it steps the same slice from the scratch (still in its cache: computing r again, its square root
// and division, cost more). Tensors without a trust ratio (1-D ones under exclude_1d) are stepped in the
// first pass.

static void step_tensors(const Tensors& x, const Args& a) {
  const scalar_t lr = a.lr, eps = a.eps, c1 = a.c1, c2 = a.c2, keep1 = 1 - a.c1, keep2 = 1 - a.c2;
  const scalar_t inv_bias_correction1 = a.inv_bias_correction1, inv_bias_correction2 = a.inv_bias_correction2;
  const scalar_t sign = a.maximize ? -1 : 1;
  for_each_tensor_slice(x, [&](int64_t t, int64_t lo, int64_t hi, Norms& norms) {
    scalar_t* p = x.param(t);
    state_t *m = x.state(0, t), *v = x.state(1, t);
    const scalar_t* g = x.grad(t);
    const uint32_t seed = x.seed(t);
    const bool adapt = x.matrix[t] || !a.exclude_1d;
    const scalar_t decay = adapt ? scalar_t(a.weight_decay) : 0;
    // The moments are written back and r computed from their new values (as the rule has them, before any
    // rounding into a narrower state).
    auto direction = [&](int64_t i) {
      const scalar_t gi = sign * g[i];
      const scalar_t m_new = keep1 * load(m, i) + c1 * gi, v_new = keep2 * load(v, i) + c2 * gi * gi;
      store(m, i, m_new, seed);
      store(v, i, v_new, seed);
      return m_new * inv_bias_correction1 / (std::sqrt(v_new * inv_bias_correction2) + eps) + decay * p[i];
    };
    if (!adapt) {
      #pragma omp simd
      for (int64_t i = lo; i < hi; i++) p[i] = p[i] - lr * direction(i);
      return;
    }
    static thread_local std::vector<scalar_t> scratch;  // this thread's slice of r; kept for the next call
    scratch.resize(hi - lo);
    scalar_t* r = scratch.data();
    double ww = 0, rr = 0;  // ‖w‖², ‖r‖²
    #pragma omp simd simdlen(32) reduction(+ : ww, rr)  // see per_tensor.h
    for (int64_t i = lo; i < hi; i++) {
      r[i - lo] = direction(i);
      ww += double(p[i]) * p[i];
      rr += double(r[i - lo]) * r[i - lo];
    }
    double sums[2] = {ww, rr};
    norms.combine(sums);
    const scalar_t w_norm = std::sqrt(sums[0]), r_norm = std::sqrt(sums[1]);
    const scalar_t step = lr * (w_norm > 0 && r_norm > 0 ? w_norm / r_norm : scalar_t(1));
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) p[i] = p[i] - step * r[i - lo];
  });
}
