// Schedule-free AdamW (rules/schedulefree.py, `adamw_update`) restated as one C++ kernel for CPU: the cpp
// backend (engine/cpp_kernels.py). One pass per tensor (read y, g, z, v; write y, z, v), ready in a second or
// two, where the compiled rule takes tens of seconds to compile.

static void step_tensors(const Tensors& x, const Args& a) {
  const scalar_t c = a.average_weight, coef = a.y_grad_coef, lr = a.scheduled_lr, weight_decay = a.weight_decay;
  const scalar_t c2 = a.c2, keep2 = 1 - a.c2, bias_correction2 = a.bias_correction2, eps = a.eps;
  for_each_tensor_slice(x, [&](int64_t t, int64_t lo, int64_t hi, Norms&) {
    scalar_t* y = x.param(t);
    state_t* z = x.state(0, t);
    state_t* v = x.state(1, t);
    const scalar_t* g = x.grad(t);
    const uint32_t seed = x.seed(t);
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
      const scalar_t vi = keep2 * load(v, i) + c2 * g[i] * g[i];
      const scalar_t u = g[i] / (std::sqrt(vi / bias_correction2) + eps) + weight_decay * y[i];
      const scalar_t zi = load(z, i);
      y[i] = y[i] + c * (zi - y[i]) + coef * u;
      store(z, i, zi - lr * u, seed);
      store(v, i, vi, seed);
    }
  });
}
