// Manifold-constrained hyper-connections (docs/model.md §4.2), the twins of dsv4-kernels' `mhc`
// ops and of the runtime's `HcMixes::compute` / `HcMixes::collapse`. The residual of a token is
// n streams of width d, stored stream-major (`x` is T × n × d). Each kernel is one launch over
// all T tokens of a chunk.
//
// The mixes of a token are (2 + n)·n floats, in the order of the projection's rows:
//   [0, n)        pre_i   weight of stream i in the sublayer input
//   [n, 2n)       post_k  weight of the sublayer output in new stream k
//   [2n, 2n + n²) comb[j·n + k]  weight of old stream j in new stream k (doubly stochastic)
// so the mixes buffer is T × (2 + n)·n f32.
#include "dsv4.cuh"
#include "weights.cuh"

// Full unrolling of the fixed-size loops over the row tile, so its accumulators stay in registers
// (GCC's spelling on the host, where a plain `#pragma unroll` is unknown).
#if defined(__CUDACC__)
#define DSV4_HC_UNROLL _Pragma("unroll")
#else
#define DSV4_HC_UNROLL _Pragma("GCC unroll 32")
#endif

// Projection rows one pass over a token's streams accumulates (every row of V4's n = 4 mixes).
#define DSV4_HC_ROW_TILE 24

__device__ __forceinline__ float dsv4_hc_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// One token's projection of its flattened streams `xt` (w.inp values) by every row of `w`, raw
// (not yet RMS-scaled), into `mu` (w.out floats of shared memory); returns the RMS factor
// (mean(x̄²) + eps)^(-1/2). Rows go in tiles of DSV4_HC_ROW_TILE, each one strided pass over
// the inputs; per-thread partial sums are reduced by warp butterflies, then across warps in
// warp order, so the result does not depend on scheduling. All threads of the block call it;
// `mu` is complete on return.
__device__ float dsv4_hc_project(const float* xt, const Dsv4Weight& w, float norm_eps, float* mu) {
    __shared__ float partial[32][DSV4_HC_ROW_TILE + 1];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float squares = 0.0f;
    for (uint32_t first = 0; first < w.out; first += DSV4_HC_ROW_TILE) {
        const uint32_t count = min(static_cast<uint32_t>(DSV4_HC_ROW_TILE), w.out - first);
        float acc[DSV4_HC_ROW_TILE];
        float sq = 0.0f;
DSV4_HC_UNROLL
        for (int r = 0; r < DSV4_HC_ROW_TILE; ++r) acc[r] = 0.0f;
        for (uint32_t i = threadIdx.x; i < w.inp; i += blockDim.x) {
            const float v = xt[i];
            sq += v * v;
DSV4_HC_UNROLL
            for (int r = 0; r < DSV4_HC_ROW_TILE; ++r)
                if (static_cast<uint32_t>(r) < count) acc[r] += dsv4_weight_at(w, first + r, i) * v;
        }
        // `count` and `first` are the same on every thread, so the shuffles never diverge.
DSV4_HC_UNROLL
        for (int r = 0; r < DSV4_HC_ROW_TILE; ++r) {
            if (static_cast<uint32_t>(r) < count) {
                const float s = dsv4_warp_sum(acc[r]);
                if (lane == 0) partial[warp][r] = s;
            }
        }
        if (first == 0) {
            const float s = dsv4_warp_sum(sq);
            if (lane == 0) partial[warp][DSV4_HC_ROW_TILE] = s;
        }
        __syncthreads();
        if (threadIdx.x < count) {
            float total = 0.0f;
            for (unsigned k = 0; k < warps; ++k) total += partial[k][threadIdx.x];
            mu[first + threadIdx.x] = total;
        }
        if (first == 0)
            for (unsigned k = 0; k < warps; ++k) squares += partial[k][DSV4_HC_ROW_TILE];
        __syncthreads();  // before the next tile overwrites `partial`; makes `mu` visible
    }
    return 1.0f / sqrtf(squares / static_cast<float>(w.inp) + norm_eps);
}

// Writes `v` (thread < n²'s entry of the comb matrix) once every thread has finished reading
// `c`, then waits until every entry is written.
__device__ __forceinline__ void dsv4_hc_store(float* c, bool mine, float v) {
    __syncthreads();
    if (mine) c[threadIdx.x] = v;
    __syncthreads();
}

// The mixes of every token: block t projects token t's n·d streams by φ (w, (2+n)·n rows),
// scales by the RMS factor, maps pre/post through sigmoids and the comb logits through the
// CPU's Sinkhorn (`dsv4_kernels::mhc::sinkhorn`: row softmax + eps, a column normalisation,
// then iters − 1 rounds of rows and columns, each sum + eps), and writes the (2+n)·n mixes.
// The Sinkhorn runs with one thread per comb entry, each summing its row or column itself in
// the CPU's order. blockDim.x is a multiple of 32 and at least n²; dynamic shared memory is
// (2+n)·n floats.
DSV4_KERNEL void hc_mixes(const float* x, uint32_t format, uint32_t scale_kind, const uint8_t* data,
                          const uint8_t* scales, uint32_t out, uint32_t inp, const float* base,
                          const float* scale, float* mixes, uint32_t n, uint32_t iters, float hc_eps,
                          float norm_eps) {
    DSV4_DYNAMIC_SHARED(float, mix);
    const Dsv4Weight w{format, scale_kind, data, scales, out, inp};
    const uint32_t rows = (2 + n) * n;
    const float* xt = x + static_cast<size_t>(blockIdx.x) * inp;
    const float r = dsv4_hc_project(xt, w, norm_eps, mix);
    for (uint32_t i = threadIdx.x; i < rows; i += blockDim.x) {
        const float mu = mix[i] * r;
        if (i < n) {
            mix[i] = dsv4_hc_sigmoid(scale[0] * mu + base[i]) + hc_eps;
        } else if (i < 2 * n) {
            mix[i] = 2.0f * dsv4_hc_sigmoid(scale[1] * mu + base[i]);
        } else {
            mix[i] = scale[2] * mu + base[i];
        }
    }
    __syncthreads();

    float* c = mix + 2 * n;
    const bool mine = threadIdx.x < n * n;
    const uint32_t j = mine ? threadIdx.x / n : 0, k = mine ? threadIdx.x % n : 0;
    float v = 0.0f;
    // Softmax of row j, then + eps (a row of −∞ stays as it is before the eps, as on the CPU).
    if (mine) {
        const float* row = c + j * n;
        float largest = -INFINITY;
        for (uint32_t m = 0; m < n; ++m) largest = fmaxf(largest, row[m]);
        v = row[k];
        if (largest != -INFINITY) {
            float sum = 0.0f;
            for (uint32_t m = 0; m < n; ++m) sum += expf(row[m] - largest);
            v = expf(v - largest) / sum;
        }
        v += hc_eps;
    }
    dsv4_hc_store(c, mine, v);
    for (uint32_t round = 0; round < max(iters, 1u); ++round) {
        if (round > 0) {
            if (mine) {
                float sum = 0.0f;
                for (uint32_t m = 0; m < n; ++m) sum += c[j * n + m];
                v = c[threadIdx.x] / (sum + hc_eps);
            }
            dsv4_hc_store(c, mine, v);
        }
        if (mine) {
            float sum = 0.0f;
            for (uint32_t m = 0; m < n; ++m) sum += c[m * n + k];
            v = c[threadIdx.x] / (sum + hc_eps);
        }
        dsv4_hc_store(c, mine, v);
    }
    float* dst = mixes + static_cast<size_t>(blockIdx.x) * rows;
    for (uint32_t i = threadIdx.x; i < rows; i += blockDim.x) dst[i] = mix[i];
}
DSV4_SIM_ENTRY(hc_mixes)

// The sublayer inputs h[t] = Σ_s pre[t][s] · x[t][s] (T × d), one thread per output value, the
// streams summed in order from 0 as on the CPU.
DSV4_KERNEL void hc_pre(float* h, const float* x, const float* mixes, uint32_t tokens, uint32_t n, uint32_t d) {
    const size_t at = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= static_cast<size_t>(tokens) * d) return;
    const size_t t = at / d, i = at % d;
    const float* pre = mixes + t * (2 + n) * n;
    const float* xt = x + t * n * d + i;
    float sum = 0.0f;
    for (uint32_t s = 0; s < n; ++s) sum += pre[s] * xt[static_cast<size_t>(s) * d];
    h[at] = sum;
}
DSV4_SIM_ENTRY(hc_pre)

// The streams after a sublayer, in place: x'[t][k] = post[t][k] · y[t] + Σ_j comb[t][j·n+k] ·
// x[t][j] over the old streams. One thread per (token, position) updates that position of all n
// streams, keeping the old values in its own column of dynamic shared memory (n · blockDim.x
// floats), so no stream is overwritten before every new one has read it.
DSV4_KERNEL void hc_post(float* x, const float* y, const float* mixes, uint32_t tokens, uint32_t n, uint32_t d) {
    DSV4_DYNAMIC_SHARED(float, old);
    const size_t at = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (at >= static_cast<size_t>(tokens) * d) return;
    const size_t t = at / d, i = at % d;
    const float* post = mixes + t * (2 + n) * n + n;
    const float* comb = post + n;
    float* xt = x + t * n * d + i;
    for (uint32_t j = 0; j < n; ++j) old[j * blockDim.x + threadIdx.x] = xt[static_cast<size_t>(j) * d];
    const float yv = y[at];
    for (uint32_t k = 0; k < n; ++k) {
        float v = post[k] * yv;
        for (uint32_t j = 0; j < n; ++j) v += comb[j * n + k] * old[j * blockDim.x + threadIdx.x];
        xt[static_cast<size_t>(k) * d] = v;
    }
}
DSV4_SIM_ENTRY(hc_post)

// The head's collapse of every token's streams: block t projects token t's n·d streams by the
// head's φ (w, n rows), pre_i = sigmoid(α₀·μ_i + b_i) + eps, and writes Σ_i pre_i · x_i (d values)
// to out[t]. blockDim.x is a multiple of 32; dynamic shared memory is n floats.
DSV4_KERNEL void hc_collapse(float* result, const float* x, uint32_t format, uint32_t scale_kind,
                             const uint8_t* data, const uint8_t* scales, uint32_t out, uint32_t inp,
                             const float* base, const float* scale, uint32_t n, uint32_t d, float hc_eps,
                             float norm_eps) {
    DSV4_DYNAMIC_SHARED(float, pre);
    const Dsv4Weight w{format, scale_kind, data, scales, out, inp};
    const float* xt = x + static_cast<size_t>(blockIdx.x) * inp;
    const float r = dsv4_hc_project(xt, w, norm_eps, pre);
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
        pre[i] = dsv4_hc_sigmoid(scale[0] * (pre[i] * r) + base[i]) + hc_eps;
    __syncthreads();
    float* ht = result + static_cast<size_t>(blockIdx.x) * d;
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) {
        float sum = 0.0f;
        for (uint32_t s = 0; s < n; ++s) sum += pre[s] * xt[static_cast<size_t>(s) * d + i];
        ht[i] = sum;
    }
}
DSV4_SIM_ENTRY(hc_collapse)
