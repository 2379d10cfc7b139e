// Nesterov SGD (rules/nag.py, `update`) restated as one C++ kernel for CPU: the cpp backend
// (engine/cpp_kernels.py). With state of the parameter's dtype, auto runs torch's fused SGD instead (exact
// there); this kernel is for bf16 state, which torch's kernel cannot keep: one pass per tensor, the buffer
// widened, stepped and rounded back stochastically, ready in a second or two where the compiled rule takes
// tens of seconds to compile.

static void step_tensors(const Tensors& x, const Args& a) {
  const scalar_t lr = a.lr, momentum = a.momentum, weight_decay = a.weight_decay, keep = 1 - a.dampening;
  const scalar_t sign = a.maximize ? -1 : 1;
  for_each_tensor_slice(x, [&](int64_t t, int64_t lo, int64_t hi, Norms&) {
    scalar_t* p = x.param(t);
    state_t* b = x.state(0, t);
    const scalar_t* g = x.grad(t);
    const uint32_t seed = x.seed(t);
    #pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
      const scalar_t d = sign * g[i] + weight_decay * p[i];
      const scalar_t buf = momentum * load(b, i) + keep * d;
      store(b, i, buf, seed);
      p[i] = p[i] - lr * (d + momentum * buf);
    }
  });
}
