// What every hand-written kernel (rules/*.cpp, the cpp backend) shares: the tensors of one call, their state
// read and written (bf16 state by stochastic rounding), one parallel region over them, and the barrier that
// adds up each tensor's norms. engine/cpp_kernels.py compiles a rule's source after this header, with
// `scalar_t` (the params' type), `state_t` (the states': scalar_t, or uint16_t holding bf16 bits) and the
// rule's `Args` defined before it.
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

// The tensors of one call, as data pointers: params, then grads, then each state, `count` of each. All are
// dense, of `scalar_t`, and laid out alike, so element i of one is element i of the others.
struct Tensors {
  const int64_t* pointers;
  const int64_t* numel;
  const bool* matrix;  // more than one dimension
  const int64_t* seeds;  // each tensor's stochastic-rounding seed (bf16 state only)
  int64_t count;
  scalar_t* param(int64_t t) const { return reinterpret_cast<scalar_t*>(pointers[t]); }
  const scalar_t* grad(int64_t t) const { return reinterpret_cast<const scalar_t*>(pointers[count + t]); }
  state_t* state(int k, int64_t t) const { return reinterpret_cast<state_t*>(pointers[(2 + k) * count + t]); }
  uint32_t seed(int64_t t) const { return seeds ? uint32_t(seeds[t]) : 0; }
};

// A state element as the parameter's type (bf16 widened exactly).
static inline scalar_t load(const state_t* s, int64_t i) {
  if constexpr (sizeof(state_t) == 2) {
    const uint32_t bits = uint32_t(s[i]) << 16;
    float x;
    std::memcpy(&x, &bits, 4);
    return x;
  } else {
    return s[i];
  }
}

// x written to a state element: as it is, or rounded into bf16 stochastically, the bits of
// engine/precision.py:stochastic_round_bf16 (its counter hash of the element's index and the seed, in
// wrap-around 32-bit arithmetic; NaN as torch casts it).
static inline void store(state_t* s, int64_t i, scalar_t x, uint32_t seed) {
  if constexpr (sizeof(state_t) == 2) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u + seed;
    h = (h ^ (h >> 16)) * 0x045D9F3Bu;
    h = (h ^ (h >> 16)) * 0x045D9F3Bu;
    h ^= h >> 16;
    uint32_t bits;
    float f = x;
    std::memcpy(&bits, &f, 4);
    bits = ((h & 0xFFFFu) + bits) & 0xFFFF0000u;
    std::memcpy(&f, &bits, 4);
    s[i] = std::isnan(f) ? uint16_t(0x7FC0) : uint16_t(bits >> 16);
  } else {
    s[i] = x;
  }
}

// Sums of squares of a tensor, each thread's part added up at a barrier in thread order (deterministic
// for a given thread count). Two slots alternate: a thread may start the next tensor's sums while another
// still reads this one's, and never gets two tensors ahead (it would have to pass the next barrier).
class Norms {
 public:
  Norms(std::vector<double>& parts, int threads, int thread) : parts_(parts), threads_(threads), thread_(thread) {}

  void combine(double (&sums)[2]) {
    double* slot = parts_.data() + (round_++ & 1) * 2 * threads_;
    slot[2 * thread_] = sums[0];
    slot[2 * thread_ + 1] = sums[1];
    #pragma omp barrier
    sums[0] = sums[1] = 0;
    for (int k = 0; k < threads_; k++) {
      sums[0] += slot[2 * k];
      sums[1] += slot[2 * k + 1];
    }
  }

 private:
  std::vector<double>& parts_;
  int threads_, thread_;
  int64_t round_ = 0;
};

// A kernel sums its squares under `#pragma omp simd simdlen(32)`: 32 lanes are four vectors of doubles, so
// four chains of additions run side by side where one would wait on each add's latency (ResNet-50 shapes,
// 2 threads: LARS 1.26 -> 1.21 x torch's fused SGD, LAMB 1.27 -> 1.21 x its fused AdamW, in one process).

// `body(t, lo, hi, norms)` for every tensor t, in one parallel region: each thread takes the same slice
// [lo, hi) of every tensor (a multiple of 64 bytes long, so no two threads write one cache line).
template <typename Body>
void for_each_tensor_slice(const Tensors& x, Body body) {
  std::vector<double> parts(4 * omp_get_max_threads());
  #pragma omp parallel
  {
    const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
    constexpr int64_t line = 64 / sizeof(scalar_t);
    Norms norms(parts, threads, thread);
    for (int64_t t = 0; t < x.count; t++) {
      const int64_t n = x.numel[t];
      const int64_t slice = ((n + threads - 1) / threads + line - 1) / line * line;
      const int64_t lo = std::min(n, thread * slice), hi = std::min(n, lo + slice);
      body(t, lo, hi, norms);
    }
  }
}

static void step_tensors(const Tensors& x, const Args& a);

extern "C" void kernel(const int64_t* pointers, const int64_t* numel, const bool* matrix, const int64_t* seeds,
                       const double* args, int64_t count) {
  step_tensors(Tensors{pointers, numel, matrix, seeds, count}, *reinterpret_cast<const Args*>(args));
}
