// Linears y = W·x on weights read in place as stored (docs/model.md §3), the twins of
// dsv4-kernels' `PackedLinear::forward` and `grouped::grouped_linear` (§4.3's wo_a).
//
// Every kernel reads x as `tokens` rows of `inp` f32 and writes y as `tokens` rows of `out` f32.
// Two geometries, because decoding one token and prefilling a chunk want different ones:
// - `linear` (GEMV, for one token): a block of 4 warps computes 4 consecutive output rows, a
//   warp per row, its lanes over the row's 64-input steps; every weight byte is read once. More
//   tokens are done one after another, re-reading the rows (correct, not fast).
// - `linear_tiled` (a chunk of tokens): a block of 256 threads computes a tile of 64 outputs ×
//   32 tokens, staging 64 inputs of x and of the decoded weight rows in shared memory per step,
//   so each weight byte is read once per 32 tokens.
// The grouped kernels are the same two over G groups in one launch (grid y, resp. z, is the
// group): group g's rows are rows g·out … (g+1)·out − 1 of ONE stored weight [G·out, inp] (wo_a
// as the checkpoint holds it, uploaded once), its input the g-th slab of `tokens × inp` values of
// x and its output the g-th slab of `tokens × out` values of y, as `grouped_linear` lays them out.
//
// Summation order is the same in every kernel: per 64-input step a fused multiply-add chain in
// input order, then the steps added in order. A row's result is therefore bit-identical whatever
// the kernel, the chunk or the scheduling. It is not the CPU panel kernels' order, so results
// agree with them to f32 rounding.
#include "weights.cuh"

// Loops of a fixed trip count unrolled on the GPU, so small arrays indexed by them stay in
// registers.
#if defined(__CUDACC__)
#define DSV4_UNROLL _Pragma("unroll")
#else
#define DSV4_UNROLL
#endif

namespace {

// Output rows (warps) per GEMV block.
constexpr uint32_t kGemvRows = 4;

// The tiled kernels' tile: outputs × tokens per block, inputs per step, and threads (16 × 16,
// each computing 4 outputs × 2 tokens: outputs tx + 16i, tokens ty + 16j).
constexpr uint32_t kTileRows = 64;
constexpr uint32_t kTileTokens = 32;
constexpr uint32_t kTileK = 64;
constexpr uint32_t kTileThreads = 256;
// Shared rows padded by one float, so the 16 rows a warp reads at one input fall in 16 banks.
constexpr uint32_t kTilePitch = kTileK + 1;

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// x[k … k+7] of one token row into v; `vector`: two 16-byte loads (the row and k are aligned),
// otherwise one by one with 0 past `inp`.
__device__ __forceinline__ void load_inputs(const float* row, uint32_t k, uint32_t inp, bool vector,
                                            float v[DSV4_CHUNK]) {
    if (vector) {
        const Dsv4Bytes16* p = reinterpret_cast<const Dsv4Bytes16*>(row + k);
        Dsv4Bytes16 a = p[0], b = p[1];
        for (int e = 0; e < 4; ++e) {
            v[e] = __uint_as_float(a.u[e]);
            v[4 + e] = __uint_as_float(b.u[e]);
        }
        return;
    }
    for (uint32_t e = 0; e < DSV4_CHUNK; ++e) v[e] = k + e < inp ? row[k + e] : 0.0f;
}

// GEMV body for format F: rows blockIdx.x·4 … +3 of group blockIdx.y, every token in turn, one
// warp per row (blockDim.x = 128). Each row's sum is the tiled kernel's, bit for bit: lane l sums
// the 64 products of steps l, l + 32, … in input order (weights scaled first, zeros past `inp`),
// then every lane adds the steps' sums in step order, so a token's output does not depend on
// whether it came alone (decode) or in a chunk.
template <uint32_t F>
__device__ void gemv(const Dsv4Weight& w, uint32_t out, const float* x, float* y, uint32_t tokens) {
    const uint32_t group = blockIdx.y, lane = threadIdx.x & 31u;
    const uint32_t o = blockIdx.x * kGemvRows + threadIdx.x / 32;
    const uint32_t inp = w.inp, steps = (inp + kTileK - 1) / kTileK;
    const uint32_t row = group * out + o;  // in the stored weight
    x += static_cast<size_t>(group) * tokens * inp;
    y += static_cast<size_t>(group) * tokens * out;
    const bool vector = dsv4_weight_vectorizable(w) && aligned16(x);
    for (uint32_t t = 0; t < tokens; ++t) {
        const float* xr = x + static_cast<size_t>(t) * inp;
        float acc = 0.0f;
        for (uint32_t s0 = 0; s0 < steps; s0 += 32) {
            float step = 0.0f;
            const uint32_t k0 = (s0 + lane) * kTileK;
            if (o < out && s0 + lane < steps) {
                for (uint32_t kc = 0; kc < kTileK; kc += DSV4_CHUNK) {
                    const uint32_t k = k0 + kc;
                    float wv[DSV4_CHUNK] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
                    float xv[DSV4_CHUNK] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
                    if (k < inp) {
                        const float scale = dsv4_weight_chunk<F>(w, row, k, vector, wv);
                        DSV4_UNROLL
                        for (uint32_t e = 0; e < DSV4_CHUNK; ++e) wv[e] *= scale;  // exact for UE8M0
                        load_inputs(xr, k, inp, vector, xv);
                    }
                    DSV4_UNROLL
                    for (uint32_t e = 0; e < DSV4_CHUNK; ++e) step = fmaf(wv[e], xv[e], step);
                }
            }
            // The steps' sums in order, from whichever lane holds each (all lanes add alike).
            const uint32_t here = min(32u, steps - s0);
            for (uint32_t j = 0; j < 32; ++j) {
                const float v = __shfl_sync(0xffffffffu, step, static_cast<int>(j));
                if (j < here) acc += v;
            }
        }
        if (lane == 0 && o < out) y[static_cast<size_t>(t) * out + o] = acc;
    }
}

// Tiled body for format F: outputs blockIdx.x·64 … +63 × tokens blockIdx.y·32 … +31 of group
// blockIdx.z. blockDim.x = 256.
// Shared: `ws` [64][65], the decoded and scaled weights [output][input]; `xs` [32][65], the
// inputs [token][input].
template <uint32_t F>
__device__ void tiled(const Dsv4Weight& w, uint32_t out, const float* x, float* y, uint32_t tokens,
                      float (*ws)[kTilePitch], float (*xs)[kTilePitch]) {
    const uint32_t group = blockIdx.z, o0 = blockIdx.x * kTileRows, t0 = blockIdx.y * kTileTokens;
    const uint32_t inp = w.inp, tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    x += static_cast<size_t>(group) * tokens * inp;
    y += static_cast<size_t>(group) * tokens * out;
    const bool vector = dsv4_weight_vectorizable(w) && aligned16(x);
    // How many of this thread's two tokens exist (it still loads tiles for the others).
    const uint32_t mine = t0 + ty + 16 < tokens ? 2 : (t0 + ty < tokens ? 1 : 0);
    float acc[4][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}};
    for (uint32_t k0 = 0; k0 < inp; k0 += kTileK) {
        // 64 rows × 8 chunks of weights, two chunks per thread; 0 past the rows or inputs.
        for (uint32_t c = tid; c < kTileRows * (kTileK / DSV4_CHUNK); c += kTileThreads) {
            const uint32_t r = c / (kTileK / DSV4_CHUNK), kc = (c % (kTileK / DSV4_CHUNK)) * DSV4_CHUNK;
            const uint32_t o = o0 + r, k = k0 + kc;
            float v[DSV4_CHUNK] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            if (o < out && k < inp) {
                const float scale = dsv4_weight_chunk<F>(w, group * out + o, k, vector, v);
                DSV4_UNROLL
                for (uint32_t e = 0; e < DSV4_CHUNK; ++e) v[e] *= scale;  // exact for UE8M0 scales
            }
            DSV4_UNROLL
            for (uint32_t e = 0; e < DSV4_CHUNK; ++e) ws[r][kc + e] = v[e];
        }
        // 32 tokens × 8 chunks of inputs, one chunk per thread.
        {
            const uint32_t r = tid / (kTileK / DSV4_CHUNK), kc = (tid % (kTileK / DSV4_CHUNK)) * DSV4_CHUNK;
            const uint32_t t = t0 + r, k = k0 + kc;
            float v[DSV4_CHUNK] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            if (t < tokens && k < inp) load_inputs(x + static_cast<size_t>(t) * inp, k, inp, vector, v);
            DSV4_UNROLL
            for (uint32_t e = 0; e < DSV4_CHUNK; ++e) xs[r][kc + e] = v[e];
        }
        __syncthreads();
        // Each step's 64 products summed apart and then added to the total (blocked summation,
        // as the CPU's per-block sums: rounding grows with √64 + √(inp/64), not √inp).
        float step[4][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}, {0.0f, 0.0f}};
        if (mine == 2) {
            for (uint32_t kk = 0; kk < kTileK; ++kk) {
                const float x0 = xs[ty][kk], x1 = xs[ty + 16][kk];
                DSV4_UNROLL
                for (uint32_t i = 0; i < 4; ++i) {
                    const float wv = ws[tx + 16 * i][kk];
                    step[i][0] = fmaf(wv, x0, step[i][0]);
                    step[i][1] = fmaf(wv, x1, step[i][1]);
                }
            }
        } else if (mine == 1) {
            for (uint32_t kk = 0; kk < kTileK; ++kk) {
                const float x0 = xs[ty][kk];
                DSV4_UNROLL
                for (uint32_t i = 0; i < 4; ++i) step[i][0] = fmaf(ws[tx + 16 * i][kk], x0, step[i][0]);
            }
        }
        DSV4_UNROLL
        for (uint32_t i = 0; i < 4; ++i) {
            acc[i][0] += step[i][0];
            acc[i][1] += step[i][1];
        }
        __syncthreads();
    }
    DSV4_UNROLL
    for (uint32_t j = 0; j < 2; ++j) {
        const size_t t = t0 + ty + 16 * j;
        DSV4_UNROLL
        for (uint32_t i = 0; i < 4; ++i) {
            const uint32_t o = o0 + tx + 16 * i;
            if (j < mine && o < out) y[t * out + o] = acc[i][j];
        }
    }
}

// The format dispatch (uniform over the launch), with the shared memory declared once for all
// formats' bodies.
template <bool Tiled>
__device__ void run(const Dsv4Weight& w, uint32_t out, const float* x, float* y, uint32_t tokens) {
    if constexpr (Tiled) {
        __shared__ float ws[kTileRows][kTilePitch];
        __shared__ float xs[kTileTokens][kTilePitch];
        switch (w.format) {
            case DSV4_F32: tiled<DSV4_F32>(w, out, x, y, tokens, ws, xs); break;
            case DSV4_BF16: tiled<DSV4_BF16>(w, out, x, y, tokens, ws, xs); break;
            case DSV4_F16: tiled<DSV4_F16>(w, out, x, y, tokens, ws, xs); break;
            case DSV4_FP8_BLOCK: tiled<DSV4_FP8_BLOCK>(w, out, x, y, tokens, ws, xs); break;
            default: tiled<DSV4_FP4_GROUP>(w, out, x, y, tokens, ws, xs); break;
        }
    } else {
        switch (w.format) {
            case DSV4_F32: gemv<DSV4_F32>(w, out, x, y, tokens); break;
            case DSV4_BF16: gemv<DSV4_BF16>(w, out, x, y, tokens); break;
            case DSV4_F16: gemv<DSV4_F16>(w, out, x, y, tokens); break;
            case DSV4_FP8_BLOCK: gemv<DSV4_FP8_BLOCK>(w, out, x, y, tokens); break;
            default: gemv<DSV4_FP4_GROUP>(w, out, x, y, tokens); break;
        }
    }
}

}  // namespace

// y = W·x for `tokens` rows (meant for one): W [out, inp] stored as (format, scale_kind, data,
// scales). Grid: ceil(out / 4) blocks of 128 threads.
DSV4_KERNEL void linear(uint32_t format, uint32_t scale_kind, const uint8_t* data, const uint8_t* scales,
                        uint32_t out, uint32_t inp, const float* x, float* y, uint32_t tokens) {
    run<false>(Dsv4Weight{format, scale_kind, data, scales, out, inp}, out, x, y, tokens);
}
DSV4_SIM_ENTRY(linear)

// y = W·x for a chunk of `tokens` rows. Grid: ceil(out / 64) × ceil(tokens / 32) blocks of 256.
DSV4_KERNEL void linear_tiled(uint32_t format, uint32_t scale_kind, const uint8_t* data, const uint8_t* scales,
                              uint32_t out, uint32_t inp, const float* x, float* y, uint32_t tokens) {
    run<true>(Dsv4Weight{format, scale_kind, data, scales, out, inp}, out, x, y, tokens);
}
DSV4_SIM_ENTRY(linear_tiled)

// parts[g] = W_g · inputs[g] for G = gridDim.y groups of `out` rows of one stored weight
// [G·out, inp], `tokens` rows each (meant for one): inputs G × tokens × inp, parts G × tokens ×
// out. Grid: ceil(out / 4) × G blocks of 128 threads.
DSV4_KERNEL void grouped_linear(uint32_t format, uint32_t scale_kind, const uint8_t* data, const uint8_t* scales,
                                uint32_t out, uint32_t inp, const float* inputs, float* parts, uint32_t tokens) {
    run<false>(Dsv4Weight{format, scale_kind, data, scales, out * gridDim.y, inp}, out, inputs, parts, tokens);
}
DSV4_SIM_ENTRY(grouped_linear)

// grouped_linear for a chunk of tokens. Grid: ceil(out / 64) × ceil(tokens / 32) × G blocks of 256.
DSV4_KERNEL void grouped_linear_tiled(uint32_t format, uint32_t scale_kind, const uint8_t* data,
                                      const uint8_t* scales, uint32_t out, uint32_t inp, const float* inputs,
                                      float* parts, uint32_t tokens) {
    run<true>(Dsv4Weight{format, scale_kind, data, scales, out * gridDim.z, inp}, out, inputs, parts, tokens);
}
DSV4_SIM_ENTRY(grouped_linear_tiled)
