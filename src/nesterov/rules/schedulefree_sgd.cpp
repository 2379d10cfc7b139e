// Schedule-free SGD (rules/schedulefree.py, `sgd_update`) restated as one C++ kernel for CPU: the cpp backend
// (engine/cpp_kernels.py). One pass per tensor (read y, g, z; write y, z), ready in a second or two: auto
// steps with it from a large group's first step, where the foreach restatement needs a temporary for the
// decayed gradient (the reference writes it into p.grad) and the compiled rule tens of seconds to compile.

static void step_tensors(const Tensors& x, const Args& a) {
  const scalar_t c = a.average_weight, coef = a.y_grad_coef, lr = a.scheduled_lr, weight_decay = a.weight_decay;
  for_each_tensor_slice(x, [&](int64_t t, int64_t lo, int64_t hi, Norms&) {
    scalar_t* y = x.param(t);
    state_t* z = x.state(0, t);
    const scalar_t* g = x.grad(t);
    const uint32_t seed = x.seed(t);
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
      const scalar_t u = g[i] + weight_decay * y[i];
      const scalar_t zi = load(z, i);
      y[i] = y[i] + c * (zi - y[i]) + coef * u;
      store(z, i, zi - lr * u, seed);
    }
  });
}
