// The reference numerics' simulations (docs/model.md §3.4, §3.5, §5): twins of dsv4-formats'
// quant.rs (`act_quant_fp8`, `kv_fp8_sim`, `fp4_sim`, `hadamard`) as dsv4-kernels/src/numerics.rs
// applies them, row by row. The quantizations are exact copies of the CPU's arithmetic (an exact
// amax, the same power-of-two scale, the same round-to-nearest-even casts), so they agree bit for
// bit; the Hadamard transform runs the CPU's butterflies in the CPU's order, so it does too.
#include "dsv4.cuh"

// Quantize–dequantize of one scale block of `len` values at `block`, by all 32 lanes of a warp
// (`lane` is this thread's): `a = max(max|x|, floor)`, `s = 2^ceil(log2(a / qmax))` as a UE8M0
// byte, `x ← cast(clamp(x / s, ±qmax)) · s` with the cast E4M3 (FP8) or E2M1 (FP4). The warp
// max is exact, so the scale is the CPU's whatever the order; NaN elements are skipped by fmaxf
// as by Rust's f32::max, and stay NaN (FP8) or become ±0 (FP4) as on the CPU.
template <bool Fp4>
__device__ __forceinline__ void dsv4_sim_block(float* block, uint32_t len, uint32_t lane) {
    const float qmax = Fp4 ? 6.0f : 448.0f;
    // FP4: 6 · 2^-126, so the scale never drops below the smallest normal; FP8: 1e-4.
    const float amax_floor = Fp4 ? 6.0f * __uint_as_float(0x00800000u) : 1e-4f;
    float amax = amax_floor;
    for (uint32_t i = lane; i < len; i += 32) amax = fmaxf(amax, fabsf(block[i]));
    amax = dsv4_warp_max(amax);
    const float s = dsv4_e8m0_to_f32(dsv4_ue8m0_ceil(amax / qmax));
    for (uint32_t i = lane; i < len; i += 32) {
        float v = block[i] / s;  // exact: s is a power of two
        v = v < -qmax ? -qmax : (v > qmax ? qmax : v);  // as Rust's clamp: NaN passes through
        float q = Fp4 ? dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(v)) : dsv4_e4m3_to_f32(dsv4_f32_to_e4m3(v));
        block[i] = q * s;
    }
}

// One warp per scale block of `block_len` values over `rows` rows of `width` values, of which
// the first `prefix` (≤ width) are quantized; the last block of each row may be shorter.
template <bool Fp4>
__device__ __forceinline__ void dsv4_sim_rows(float* x, uint32_t rows, uint32_t width, uint32_t prefix,
                                              uint32_t block_len) {
    const uint32_t per_row = (prefix + block_len - 1) / block_len;
    const uint64_t warp = static_cast<uint64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (per_row == 0 || warp >= static_cast<uint64_t>(rows) * per_row) return;  // whole warps leave
    const uint64_t row = warp / per_row;
    const uint32_t first = static_cast<uint32_t>(warp % per_row) * block_len;
    const uint32_t len = prefix - first < block_len ? prefix - first : block_len;
    dsv4_sim_block<Fp4>(x + row * width + first, len, threadIdx.x & 31u);
}

// FP8 activation quantization before an FP8/FP4 product (docs/model.md §3.4), in place: each of
// `rows` rows of `n` values in blocks of 128 (the last may be shorter), UE8M0 scale, E4M3.
DSV4_KERNEL void act_quant_fp8(float* x, uint32_t rows, uint32_t n) {
    dsv4_sim_rows<false>(x, rows, n, n, 128);
}
DSV4_SIM_ENTRY(act_quant_fp8)

// The KV entry simulation (docs/model.md §3.5), in place: of each of `rows` entries of `width`
// values, the first `nope` (clamped to the width) in blocks of 64 through the FP8 rule; the
// rotary dims after them are left as they are, as the twin leaves them.
DSV4_KERNEL void kv_fp8_sim(float* x, uint32_t rows, uint32_t width, uint32_t nope) {
    dsv4_sim_rows<false>(x, rows, width, nope < width ? nope : width, 64);
}
DSV4_SIM_ENTRY(kv_fp8_sim)

// The FP4 simulation of indexer queries and keys (docs/model.md §3.5), in place: each of `rows`
// rows of `n` values in blocks of 32 (the last may be shorter), UE8M0 scale of amax / 6, E2M1.
DSV4_KERNEL void fp4_sim(float* x, uint32_t rows, uint32_t n) {
    dsv4_sim_rows<true>(x, rows, n, n, 32);
}
DSV4_SIM_ENTRY(fp4_sim)

// The normalized Walsh–Hadamard transform (Sylvester order) of each of `rows` rows of `n` values
// (a power of two), in place: one block per row (blockIdx.x), the row in dynamic shared memory
// (n floats). The stages run as the CPU's: h = 1, 2, 4, ...; pair (i, i + h) becomes (u + v,
// u − v); then one multiplication by (f32)(1 / sqrt(n)) computed in double as the CPU does. Each
// pair belongs to one thread within a stage and the stages are separated by barriers, so every
// value is the same sequence of f32 operations as on the CPU.
DSV4_KERNEL void hadamard(float* x, uint32_t n) {
    DSV4_DYNAMIC_SHARED(float, v);
    float* row = x + static_cast<size_t>(blockIdx.x) * n;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) v[i] = row[i];
    __syncthreads();
    for (uint32_t h = 1; h < n; h <<= 1) {
        for (uint32_t p = threadIdx.x; p < n / 2; p += blockDim.x) {
            // The p-th pair of the stage: the low index has bit h clear.
            uint32_t i = ((p & ~(h - 1)) << 1) | (p & (h - 1));
            float u = v[i], w = v[i + h];
            v[i] = u + w;
            v[i + h] = u - w;
        }
        __syncthreads();
    }
    const float norm = static_cast<float>(1.0 / sqrt(static_cast<double>(n)));
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = v[i] * norm;
}
DSV4_SIM_ENTRY(hadamard)
