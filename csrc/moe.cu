// The MoE (docs/model.md §4.8), twins of dsv4-kernels' `moe::{router_scores, moe_route,
// experts, swiglu}` and of the runtime's fixed-order sum (dsv4-runtime/src/model/moe.rs):
// - `moe_route`: router scores, each token's K experts and their weights;
// - the experts in three kernels, because each expert's weights are read once per batch of the
//   rows routed to it (grouped by expert, as the CPU does) while the sum over a token's experts
//   must run in one fixed order: `experts_gate_up` (w1, w3 and SwiGLU into a hidden scratch),
//   `experts_down` (w2 into a partial scratch, one row per token and slot) and `experts_sum`
//   (shared expert first, then routed experts by index, as the CPU adds them).
//
// A "row" of the experts is a (token t, slot s) pair, numbered t·(K+1) + s: slot 0 is the shared
// expert (weight 1), slot 1 + j the token's j-th routed choice. Both scratches are indexed by row.
//
// Every dot product runs in the order of the CPU's panel kernels (dsv4-kernels/src/panel.rs): per
// block of inputs (32 for FP4, its scale group; 128 otherwise) a chain of fused multiply-adds
// from 0 over the unscaled stored values, then `total = fma(block sum, block scale, total)`. So
// cuda-sim matches the CPU bit for bit, and a GPU differs only through expf/log1pf.
#include "weights.cuh"

// Full unrolling of a loop of constant count, and a function kept out of line (nvcc; the host
// compiler decides for itself).
#if defined(__CUDACC__)
#define MOE_UNROLL _Pragma("unroll")
#define MOE_NOINLINE __noinline__
#else
#define MOE_UNROLL
#define MOE_NOINLINE
#endif

namespace {

// Rows (token, slot) that one pass over a block's weight rows serves.
constexpr uint32_t MOE_BATCH = 8;
// Most experts per token (experts_sum orders a token's slots in shared memory).
constexpr uint32_t MOE_MAX_K = 32;
// An expert id that names no expert (a token id outside the hash table); such slots are skipped.
constexpr uint32_t MOE_NONE = 0xffffffffu;
// Channels per scale of the reference numerics' activation quantization (docs/model.md §3.4).
constexpr uint32_t MOE_ACT_BLOCK = 128;

}  // namespace

// One linear of one expert in the table the Rust side uploads (dsv4-kernels/src/cuda/moe.rs,
// `ExpertTable`): 24 bytes, little-endian. Null data means the expert is not on the device.
struct Dsv4ExpertLinear {
    uint64_t data, scales;
    uint32_t format, scale_kind;
};

namespace {

// Linear `m` (0 = w1 gate, 1 = w3 up, 2 = w2 down) of expert slot `y` (0 = shared, 1 + e = routed
// expert e) as a weight of `out × inp`.
__device__ __forceinline__ Dsv4Weight moe_linear(const Dsv4ExpertLinear* table, uint32_t y, uint32_t m,
                                                 uint32_t out, uint32_t inp) {
    const Dsv4ExpertLinear& r = table[3 * y + m];
    Dsv4Weight w;
    w.format = r.format;
    w.scale_kind = r.scale_kind;
    w.data = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(r.data));
    w.scales = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(r.scales));
    w.out = out;
    w.inp = inp;
    return w;
}

__device__ __forceinline__ bool moe_quantized(const Dsv4Weight& w) {
    return w.format == DSV4_FP8_BLOCK || w.format == DSV4_FP4_GROUP;
}

// 16 bytes at p (16-byte aligned) with one load on the GPU.
__device__ __forceinline__ void moe_load16(const uint8_t* p, uint32_t u[4]) {
#if defined(__CUDACC__)
    uint4 q = *reinterpret_cast<const uint4*>(p);
    u[0] = q.x;
    u[1] = q.y;
    u[2] = q.z;
    u[3] = q.w;
#else
    memcpy(u, p, 16);
#endif
}

// Values of format F per 32-bit word of a stored row.
template <uint32_t F>
__host__ __device__ constexpr uint32_t moe_per_word() {
    return F == DSV4_FP4_GROUP ? 8 : F == DSV4_FP8_BLOCK ? 4 : F == DSV4_F32 ? 1 : 2;
}

// Value h (0 ≤ h < moe_per_word<F>()) of a stored 32-bit word, unscaled: E2M1 and E4M3 values
// before their block scale, floats as they are.
template <uint32_t F>
__device__ __forceinline__ float moe_word_value(uint32_t word, uint32_t h) {
    if constexpr (F == DSV4_FP4_GROUP) return dsv4_e2m1_to_f32(word >> (4 * h));
    if constexpr (F == DSV4_FP8_BLOCK) return dsv4_e4m3_to_f32(static_cast<uint8_t>(word >> (8 * h)));
    if constexpr (F == DSV4_F32) return __uint_as_float(word);
    const uint16_t bits = static_cast<uint16_t>(word >> (16 * h));
    return F == DSV4_BF16 ? dsv4_bf16_to_f32(bits) : dsv4_f16_to_f32(bits);
}

// Stored value W[o, i] of format F, unscaled, read byte by byte (for chunks that are partial or
// not aligned).
template <uint32_t F>
__device__ __forceinline__ float moe_element(const Dsv4Weight& w, uint32_t o, uint32_t i) {
    const size_t at = static_cast<size_t>(o) * w.inp + i;
    if constexpr (F == DSV4_FP4_GROUP) {
        return moe_word_value<F>(w.data[at / 2], i & 1u);
    } else {
        constexpr uint32_t size = 4 / moe_per_word<F>();
        uint32_t word = 0;
        for (uint32_t b = 0; b < size; ++b) word |= static_cast<uint32_t>(w.data[size * at + b]) << (8 * b);
        return moe_word_value<F>(word, 0);
    }
}

// The scale of the accumulation block holding input i of row o (1 for float formats).
template <uint32_t F>
__device__ __forceinline__ float moe_block_scale(const Dsv4Weight& w, uint32_t o, uint32_t i) {
    if constexpr (F == DSV4_FP4_GROUP) return dsv4_scale_at(w, static_cast<size_t>(o) * (w.inp / 32) + i / 32);
    if constexpr (F == DSV4_FP8_BLOCK) {
        const uint32_t cols = (w.inp + 127) / 128;
        return dsv4_scale_at(w, static_cast<size_t>(o / 128) * cols + i / 128);
    }
    return 1.0f;
}

// UE8M0 byte of 2^ceil(log2 x), as dsv4-formats' ue8m0_ceil (x clamped to [2^-127, f32 max]).
__device__ __forceinline__ uint32_t moe_ue8m0_ceil(float x) {
    const float lo = __uint_as_float(0x00400000u), hi = __uint_as_float(0x7f7fffffu);
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    if (x < __uint_as_float(0x00800000u)) return x <= lo ? 0u : 1u;
    const uint32_t bits = __float_as_uint(x), exponent = (bits >> 23) & 0xffu;
    return (bits & 0x7fffffu) == 0 ? exponent : min(exponent + 1u, 254u);
}

// The reference's FP8 scale of one activation block: 2^ceil(log2(max(amax, 1e-4) / 448)).
__device__ __forceinline__ float moe_act_scale(const float* x, uint32_t n) {
    float amax = 1e-4f;
    for (uint32_t i = 0; i < n; ++i) amax = fmaxf(amax, fabsf(x[i]));
    return dsv4_e8m0_to_f32(static_cast<uint8_t>(moe_ue8m0_ceil(amax / 448.0f)));
}

// x quantized to E4M3 at scale s and back (dsv4-formats' act_quant_fp8 on one value). Not
// inlined on the GPU: it sits in the innermost loop of the reference numerics only.
MOE_NOINLINE __device__ float moe_act_quant(float x, float s) {
    float q = x / s;
    q = q < -448.0f ? -448.0f : (q > 448.0f ? 448.0f : q);  // NaN stays NaN
    return dsv4_e4m3_to_f32(dsv4_f32_to_e4m3(q)) * s;
}

// acc[r] = fma(v, x_r[i], acc[r]) for the n batch rows; with QUANT, x quantized first with its
// block's scale (act_scales: MOE_BATCH rows of act_blocks).
template <bool QUANT>
__device__ __forceinline__ void moe_fma_rows(float v, const float* const* xs, uint32_t i, uint32_t n,
                                             const float* act_scales, uint32_t act_blocks, float* acc) {
    MOE_UNROLL
    for (uint32_t r = 0; r < MOE_BATCH; ++r) {
        if (r < n) {
            float x = xs[r][i];
            if (QUANT) x = moe_act_quant(x, act_scales[r * act_blocks + i / MOE_ACT_BLOCK]);
            acc[r] = fmaf(v, x, acc[r]);
        }
    }
}

// total[r] = W[o, :] · xs[r] for the n ≤ MOE_BATCH rows xs (each w.inp values), in the CPU's
// order (see the top of the file). QUANT: each x value is quantized with its block's scale
// first (act_scales, MOE_BATCH rows of ceil(inp / 128)). Whole aligned chunks of 32 inputs are
// read with 16-byte loads, the rest byte by byte. One call per output row and batch, so not
// inlined: each format's loop is compiled once per kernel.
template <uint32_t F, bool QUANT>
MOE_NOINLINE __device__ void moe_row_dots_of(const Dsv4Weight& w, uint32_t o, const float* const* xs, uint32_t n,
                                             const float* act_scales, float* total) {
    constexpr uint32_t block = F == DSV4_FP4_GROUP ? 32 : 128, per_word = moe_per_word<F>();
    constexpr uint32_t chunk_bytes = 32 / per_word * 4;
    const uint32_t act_blocks = (w.inp + MOE_ACT_BLOCK - 1) / MOE_ACT_BLOCK;
    float sum[MOE_BATCH];
    MOE_UNROLL
    for (uint32_t r = 0; r < MOE_BATCH; ++r) sum[r] = 0.0f;
    for (uint32_t b0 = 0; b0 < w.inp; b0 += block) {
        const uint32_t end = min(b0 + block, w.inp);
        float acc[MOE_BATCH];
        MOE_UNROLL
        for (uint32_t r = 0; r < MOE_BATCH; ++r) acc[r] = 0.0f;
        for (uint32_t i0 = b0; i0 < end; i0 += 32) {
            const size_t at = static_cast<size_t>(o) * w.inp + i0;
            const uint8_t* p = w.data + at * chunk_bytes / 32;
            if (end - i0 >= 32 && (reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
                for (uint32_t q = 0; q < chunk_bytes / 16; ++q) {
                    uint32_t u[4];
                    moe_load16(p + 16 * q, u);
                    MOE_UNROLL
                    for (uint32_t e = 0; e < 4; ++e) {
                        MOE_UNROLL
                        for (uint32_t h = 0; h < per_word; ++h) {
                            const uint32_t i = i0 + (4 * q + e) * per_word + h;
                            moe_fma_rows<QUANT>(moe_word_value<F>(u[e], h), xs, i, n, act_scales, act_blocks, acc);
                        }
                    }
                }
            } else {
                for (uint32_t i = i0; i < min(i0 + 32, end); ++i)
                    moe_fma_rows<QUANT>(moe_element<F>(w, o, i), xs, i, n, act_scales, act_blocks, acc);
            }
        }
        const float s = moe_block_scale<F>(w, o, b0);
        MOE_UNROLL
        for (uint32_t r = 0; r < MOE_BATCH; ++r) sum[r] = fmaf(acc[r], s, sum[r]);
    }
    for (uint32_t r = 0; r < MOE_BATCH; ++r) total[r] = sum[r];
}

// moe_row_dots_of for w's format; `act_scales` null: no quantization (float formats never).
__device__ __forceinline__ void moe_row_dots(const Dsv4Weight& w, uint32_t o, const float* const* xs, uint32_t n,
                                             const float* act_scales, float* total) {
    const bool q = act_scales != nullptr;
    switch (w.format) {
        case DSV4_F32: moe_row_dots_of<DSV4_F32, false>(w, o, xs, n, nullptr, total); break;
        case DSV4_BF16: moe_row_dots_of<DSV4_BF16, false>(w, o, xs, n, nullptr, total); break;
        case DSV4_F16: moe_row_dots_of<DSV4_F16, false>(w, o, xs, n, nullptr, total); break;
        case DSV4_FP8_BLOCK:
            if (q) moe_row_dots_of<DSV4_FP8_BLOCK, true>(w, o, xs, n, act_scales, total);
            else moe_row_dots_of<DSV4_FP8_BLOCK, false>(w, o, xs, n, nullptr, total);
            break;
        default:
            if (q) moe_row_dots_of<DSV4_FP4_GROUP, true>(w, o, xs, n, act_scales, total);
            else moe_row_dots_of<DSV4_FP4_GROUP, false>(w, o, xs, n, nullptr, total);
            break;
    }
}

// The activation scales of the reference numerics for the n batch rows xs (each `inp` values):
// MOE_BATCH rows of ceil(inp / 128) into `scales` (shared), one block per thread. The caller
// synchronizes before reading them.
__device__ void moe_act_scales(const float* const* xs, uint32_t n, uint32_t inp, float* scales) {
    const uint32_t blocks = (inp + MOE_ACT_BLOCK - 1) / MOE_ACT_BLOCK;
    for (uint32_t p = threadIdx.x; p < n * blocks; p += blockDim.x) {
        const uint32_t r = p / blocks, b = p % blocks;
        const uint32_t first = b * MOE_ACT_BLOCK;
        scales[r * blocks + b] = moe_act_scale(xs[r] + first, min(MOE_ACT_BLOCK, inp - first));
    }
}

// silu(min(g, limit)) · clamp(u, −limit, limit); no clamp when limit is 0 (moe::swiglu).
__device__ __forceinline__ float moe_swiglu(float g, float u, float limit) {
    if (limit > 0.0f) {
        g = fminf(g, limit);  // as Rust's f32::min: a NaN gate gives the limit
        u = u < -limit ? -limit : (u > limit ? limit : u);
    }
    return g * (1.0f / (1.0f + expf(-g))) * u;
}

// Routing weight of row `row` (slot 0, the shared expert: 1).
__device__ __forceinline__ float moe_row_weight(const float* weights, uint32_t row, uint32_t k) {
    const uint32_t slot = row % (k + 1);
    return slot == 0 ? 1.0f : weights[(row / (k + 1)) * k + slot - 1];
}

// Calls batch(rows, n) for the rows of expert slot `y` (0: every token's slot 0; 1 + e: each
// (t, j) with ids[t·K + j] = e), n ≤ MOE_BATCH at a time, in row order. Every thread of the block
// calls it and `batch` alike (it holds __syncthreads); ids are scanned blockDim.x at a time and
// compacted in order with one ballot per warp. blockDim.x is a multiple of 32, at most 1024.
template <class Batch>
__device__ void moe_for_each_batch(const uint32_t* ids, uint32_t t_count, uint32_t k, uint32_t y, Batch batch) {
    __shared__ uint32_t queue[1024 + MOE_BATCH];
    __shared__ uint32_t warp_counts[32];
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const uint32_t entries = y == 0 ? t_count : t_count * k;
    uint32_t pending = 0;
    for (uint32_t base = 0; base < entries; base += blockDim.x) {
        const uint32_t j = base + threadIdx.x;
        const bool match = j < entries && (y == 0 || ids[j] == y - 1);
        const unsigned ballot = __ballot_sync(0xffffffffu, match);
        if (lane == 0) warp_counts[warp] = static_cast<uint32_t>(__popc(ballot));
        __syncthreads();
        uint32_t before = pending, found = 0;
        for (uint32_t w = 0; w < warps; ++w) {
            if (w < warp) before += warp_counts[w];
            found += warp_counts[w];
        }
        if (match) {
            const uint32_t row = y == 0 ? j * (k + 1) : (j / k) * (k + 1) + 1 + j % k;
            queue[before + static_cast<uint32_t>(__popc(ballot & ((1u << lane) - 1u)))] = row;
        }
        __syncthreads();
        pending += found;
        uint32_t done = 0;
        for (; pending - done >= MOE_BATCH; done += MOE_BATCH) {
            batch(queue + done, MOE_BATCH);
            __syncthreads();
        }
        // The rest (< MOE_BATCH) moves to the front for the next scan step.
        const uint32_t rest = pending - done;
        uint32_t moved = threadIdx.x < rest ? queue[done + threadIdx.x] : 0;
        __syncthreads();
        if (threadIdx.x < rest) queue[threadIdx.x] = moved;
        __syncthreads();
        pending = rest;
    }
    if (pending > 0) {
        batch(queue, pending);
        __syncthreads();
    }
}

}  // namespace

// Gate and up projections with SwiGLU: hidden[row, i] = swiglu(w1_e[i]·x_t, w3_e[i]·x_t) for every
// row (t, slot) routed to expert slot y = blockIdx.y (0 shared, 1 + e routed) and i = blockIdx.x ·
// blockDim.x + threadIdx.x; in reference numerics times the row's routing weight, x quantized per
// 128 channels for an FP8/FP4 weight. Grid (ceil(I / blockDim.x), E + 1); dynamic shared memory
// MOE_BATCH × ceil(D / 128) floats in reference numerics (else none).
// x: T × D; ids, weights: T × K (moe_route's); hidden: T·(K+1) × I.
DSV4_KERNEL void experts_gate_up(const Dsv4ExpertLinear* table, const float* x, const uint32_t* ids,
                                 const float* weights, uint32_t t_count, uint32_t k, uint32_t d, uint32_t inter,
                                 float swiglu_limit, uint32_t reference, float* hidden) {
    DSV4_DYNAMIC_SHARED(float, act_scales);
    const uint32_t y = blockIdx.y, o = blockIdx.x * blockDim.x + threadIdx.x;
    const Dsv4Weight gate = moe_linear(table, y, 0, inter, d), up = moe_linear(table, y, 1, inter, d);
    moe_for_each_batch(ids, t_count, k, y, [&](const uint32_t* rows, uint32_t n) {
        const float* xs[MOE_BATCH];
        for (uint32_t r = 0; r < MOE_BATCH; ++r) xs[r] = x + static_cast<size_t>(rows[min(r, n - 1)] / (k + 1)) * d;
        if (reference) {
            moe_act_scales(xs, n, d, act_scales);
            __syncthreads();
        }
        if (o >= inter) return;
        float g[MOE_BATCH], u[MOE_BATCH];
        moe_row_dots(gate, o, xs, n, reference && moe_quantized(gate) ? act_scales : nullptr, g);
        moe_row_dots(up, o, xs, n, reference && moe_quantized(up) ? act_scales : nullptr, u);
        for (uint32_t r = 0; r < n; ++r) {
            float z = moe_swiglu(g[r], u[r], swiglu_limit);
            if (reference) z *= moe_row_weight(weights, rows[r], k);
            hidden[static_cast<size_t>(rows[r]) * inter + o] = z;
        }
    });
}
DSV4_SIM_ENTRY(experts_gate_up)

// Down projection: partial[row, o] = w2_e[o]·hidden[row] for every row routed to expert slot
// y = blockIdx.y and o = blockIdx.x · blockDim.x + threadIdx.x, times the row's routing weight
// in exact numerics (reference numerics weighted `hidden` already, and quantize it per 128 for an
// FP8/FP4 w2). Grid (ceil(D / blockDim.x), E + 1); dynamic shared memory MOE_BATCH × ceil(I / 128)
// floats in reference numerics. partial: T·(K+1) × D; rows no expert fills are left alone.
DSV4_KERNEL void experts_down(const Dsv4ExpertLinear* table, const float* hidden, const uint32_t* ids,
                              const float* weights, uint32_t t_count, uint32_t k, uint32_t d, uint32_t inter,
                              uint32_t reference, float* partial) {
    DSV4_DYNAMIC_SHARED(float, act_scales);
    const uint32_t y = blockIdx.y, o = blockIdx.x * blockDim.x + threadIdx.x;
    const Dsv4Weight down = moe_linear(table, y, 2, d, inter);
    moe_for_each_batch(ids, t_count, k, y, [&](const uint32_t* rows, uint32_t n) {
        const float* xs[MOE_BATCH];
        for (uint32_t r = 0; r < MOE_BATCH; ++r) xs[r] = hidden + static_cast<size_t>(rows[min(r, n - 1)]) * inter;
        if (reference) {
            moe_act_scales(xs, n, inter, act_scales);
            __syncthreads();
        }
        if (o >= d) return;
        float y_rows[MOE_BATCH];
        moe_row_dots(down, o, xs, n, reference && moe_quantized(down) ? act_scales : nullptr, y_rows);
        for (uint32_t r = 0; r < n; ++r) {
            const float v = reference ? y_rows[r] : y_rows[r] * moe_row_weight(weights, rows[r], k);
            partial[static_cast<size_t>(rows[r]) * d + o] = v;
        }
    });
}
DSV4_SIM_ENTRY(experts_down)

// out[t, o] = shared + the token's routed experts by expert index (equal ids by slot), added
// one after another from 0 as the runtime's CPU MoE does; slots whose id is ≥ E are skipped.
// Grid (ceil(D / blockDim.x), T); k ≤ MOE_MAX_K.
DSV4_KERNEL void experts_sum(const float* partial, const uint32_t* ids, uint32_t t_count, uint32_t k,
                             uint32_t e_count, uint32_t d, float* out) {
    __shared__ uint32_t order[MOE_MAX_K];
    const uint32_t t = blockIdx.y, o = blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t* row_ids = ids + static_cast<size_t>(t) * k;
    // Slot j goes to position rank(j) = #slots before it in (id, slot) order.
    if (threadIdx.x < k) {
        const uint32_t j = threadIdx.x, id = row_ids[j];
        uint32_t rank = 0;
        for (uint32_t q = 0; q < k; ++q) rank += row_ids[q] < id || (row_ids[q] == id && q < j);
        order[rank] = j;
    }
    __syncthreads();
    if (o >= d || t >= t_count) return;
    const float* rows = partial + static_cast<size_t>(t) * (k + 1) * d + o;
    float acc = 0.0f;
    acc += rows[0];
    for (uint32_t q = 0; q < k; ++q) {
        const uint32_t j = order[q];
        if (row_ids[j] < e_count) acc += rows[static_cast<size_t>(1 + j) * d];
    }
    out[static_cast<size_t>(t) * d + o] = acc;
}
DSV4_SIM_ENTRY(experts_sum)

namespace {

// A score as the CPU's top-k ranks it (ops::best_first): larger first (f32 total order, NaN as
// −∞), then the lower index; as one integer, larger = better. Never 0 (the mark of a taken one).
__device__ __forceinline__ uint64_t moe_rank_key(float s, uint32_t index) {
    const uint32_t bits = __float_as_uint(s != s ? -INFINITY : s);
    const uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return (static_cast<uint64_t>(ordered) << 32) | static_cast<uint32_t>(~index);
}

__device__ __forceinline__ float moe_softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

}  // namespace

// Router scores and each token's experts: one warp per token t (blockDim.x / 32 tokens per
// block). scores = sqrt(softplus(logits[t])) (E values); the experts are tid2eid[tokens[t]]
// (K values) when tid2eid is not null (hash layers; a token ≥ vocab gets MOE_NONE and weight 0),
// else the top K of scores + bias (bias may be null), best first, ties to the lower index;
// weights = score / Σ chosen scores (norm_topk_prob) times `scaling`. Outputs: ids and weights
// T × K in choice order; scores_out T × E when not null. Dynamic shared memory: 12 · E bytes per
// warp; K ≤ E.
DSV4_KERNEL void moe_route(const float* logits, const float* bias, const uint32_t* tid2eid, const uint32_t* tokens,
                           uint32_t vocab, uint32_t t_count, uint32_t e_count, uint32_t k, uint32_t norm_topk_prob,
                           float scaling, uint32_t* ids, float* weights, float* scores_out) {
    DSV4_DYNAMIC_SHARED(unsigned char, shared);
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    uint64_t* keys = reinterpret_cast<uint64_t*>(shared) + static_cast<size_t>(warp) * e_count;
    float* scores = reinterpret_cast<float*>(reinterpret_cast<uint64_t*>(shared) + static_cast<size_t>(warps) * e_count) +
                    static_cast<size_t>(warp) * e_count;
    const uint32_t t = blockIdx.x * warps + warp;
    if (t >= t_count) return;  // the whole warp
    const float* row = logits + static_cast<size_t>(t) * e_count;
    for (uint32_t i = lane; i < e_count; i += 32) {
        const float s = sqrtf(moe_softplus(row[i]));
        scores[i] = s;
        if (scores_out) scores_out[static_cast<size_t>(t) * e_count + i] = s;
        keys[i] = moe_rank_key(bias ? s + bias[i] : s, i);
    }
    __syncwarp();
    uint32_t* out_ids = ids + static_cast<size_t>(t) * k;
    float* out_weights = weights + static_cast<size_t>(t) * k;
    if (!tid2eid) {
        // K rounds of a warp-wide maximum of the keys; the winner is marked taken.
        for (uint32_t j = 0; j < k; ++j) {
            uint64_t best = 0;
            for (uint32_t i = lane; i < e_count; i += 32) best = best > keys[i] ? best : keys[i];
            for (int offset = 16; offset > 0; offset >>= 1) {
                const uint64_t other = __shfl_xor_sync(0xffffffffu, best, offset);
                best = best > other ? best : other;
            }
            const uint32_t e = best == 0 ? MOE_NONE : ~static_cast<uint32_t>(best);
            if (lane == 0) out_ids[j] = e;
            if (e < e_count && lane == e % 32) keys[e] = 0;
            __syncwarp();
        }
    } else if (lane == 0) {
        const uint32_t token = tokens[t];
        for (uint32_t j = 0; j < k; ++j)
            out_ids[j] = token < vocab ? tid2eid[static_cast<size_t>(token) * k + j] : MOE_NONE;
    }
    if (lane != 0) return;
    // Lane 0 wrote every id; the sum runs in choice order as the CPU's.
    float total = 0.0f;
    for (uint32_t j = 0; j < k; ++j) {
        const uint32_t e = out_ids[j];
        if (e < e_count) total += scores[e];
    }
    for (uint32_t j = 0; j < k; ++j) {
        const uint32_t e = out_ids[j];
        float w = 0.0f;
        if (e < e_count) w = (norm_topk_prob ? scores[e] / total : scores[e]) * scaling;
        out_weights[j] = w;
    }
}
DSV4_SIM_ENTRY(moe_route)
