// RoPE, the twin of dsv4-kernels' `RopeFrequencies::rotate` (docs/model.md §4.7): the last `dr`
// dims of each head, as dr/2 interleaved pairs (2i, 2i + 1), rotated by φ = p·inv_freq[i]. The
// frequency table (main, or YaRN-blended for compressed layers) is `RopeFrequencies::new`'s,
// computed on the host and uploaded; the kernel only rotates.
#include "dsv4.cuh"

// a·b rounded on its own: nvcc would otherwise fuse a·cos − b·sin into an FMA, which the CPU
// twin does not do. The host build never contracts (no FMA in the baseline x86-64 target).
__device__ __forceinline__ float dsv4_rope_mul(float a, float b) {
#if defined(__CUDACC__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// x is `T × heads × dh` (T = gridDim.x tokens, one block each); token t sits at position
// `positions[t]` when `positions` is not null, else at `p0 + t·stride` (queries and keys of a
// chunk: stride 1; a run of compressed entries w, w + 1, ...: p0 = m·w, stride m). The angle is
// computed as the twin does, (f32)p · inv_freq[i] in f32, then sinf/cosf; `inverse` ≠ 0 negates
// the sine. Dynamic shared memory: dr floats (cos, sin of each pair).
DSV4_KERNEL void rope(float* x, const float* inv_freq, const uint32_t* positions, uint64_t p0, uint64_t stride,
                      uint32_t heads, uint32_t dh, uint32_t dr, int32_t inverse) {
    DSV4_DYNAMIC_SHARED(float, table);
    const uint32_t t = blockIdx.x, pairs = dr / 2;
    const uint64_t position = positions ? positions[t] : p0 + static_cast<uint64_t>(t) * stride;
    const float p = static_cast<float>(position);
    for (uint32_t i = threadIdx.x; i < pairs; i += blockDim.x) {
        const float angle = p * inv_freq[i];
        const float s = sinf(angle);
        table[2 * i] = cosf(angle);
        table[2 * i + 1] = inverse ? -s : s;
    }
    __syncthreads();
    float* rotary = x + static_cast<size_t>(t) * heads * dh + (dh - dr);
    for (uint32_t k = threadIdx.x; k < heads * pairs; k += blockDim.x) {
        const uint32_t head = k / pairs, i = k % pairs;
        float* pair = rotary + static_cast<size_t>(head) * dh + 2 * i;
        const float a = pair[0], b = pair[1], c = table[2 * i], s = table[2 * i + 1];
        pair[0] = dsv4_rope_mul(a, c) - dsv4_rope_mul(b, s);
        pair[1] = dsv4_rope_mul(a, s) + dsv4_rope_mul(b, c);
    }
}
DSV4_SIM_ENTRY(rope)
