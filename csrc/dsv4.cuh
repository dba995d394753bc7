// The prelude of every kernel file in csrc/. Under nvcc it is CUDA; under the host compiler it is
// the project's SIMT emulation (sim/simt.h), so the same source runs on the CPU as `cuda-sim`.
//
// Rules for kernel files (docs/gpu.md):
// - every kernel is `DSV4_KERNEL void name(...)` followed by `DSV4_SIM_ENTRY(name)`, named as
//   the CPU op it twins in dsv4-kernels; kernels take only pointers, integers and floats;
// - dynamic shared memory through `DSV4_DYNAMIC_SHARED(T, name)`;
// - no `<<<>>>`, no inline asm outside a helper with a host branch, no `__expf`/`rsqrtf`-style
//   approximations: the twin tests compare against the CPU at stated tolerances.
#pragma once

#include <stdint.h>
#include <math.h>

#if defined(__CUDACC__)
#define DSV4_KERNEL extern "C" __global__
#define DSV4_SIM_ENTRY(kernel)
#define DSV4_DYNAMIC_SHARED(T, name)                                                               \
    extern __shared__ __align__(16) unsigned char dsv4_dynamic_shared_[];                         \
    T* name = reinterpret_cast<T*>(dsv4_dynamic_shared_)
#else
#include "sim/simt.h"
#endif

// The release's number formats, decoded bit for bit as dsv4-formats does (docs/model.md §3).

// bfloat16 bits → f32 (exact).
__device__ __forceinline__ float dsv4_bf16_to_f32(uint16_t bits) {
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// f32 → bfloat16 bits, round to nearest even (NaN stays NaN).
__device__ __forceinline__ uint16_t dsv4_f32_to_bf16(float x) {
    uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
}

// IEEE half bits → f32 (exact).
__device__ __forceinline__ float dsv4_f16_to_f32(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
        float m = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
        return sign ? -m : m;
    }
    return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// E4M3 (float8_e4m3fn) byte → f32: bias 7, no infinities, 0x7f/0xff NaN.
__device__ __forceinline__ float dsv4_e4m3_to_f32(uint8_t byte) {
    uint32_t sign = static_cast<uint32_t>(byte & 0x80u) << 24;
    uint32_t exponent = (byte >> 3) & 0xfu;
    uint32_t mantissa = byte & 0x7u;
    if (exponent == 0xfu && mantissa == 7u) return __uint_as_float(0x7fc00000u);
    if (exponent == 0) {
        float m = static_cast<float>(mantissa) * 0.001953125f;  // 2^-9
        return __uint_as_float(sign | __float_as_uint(m));
    }
    return __uint_as_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

// Nearest E4M3 byte, ties to even; beyond ±448 saturates, NaN → 0x7f.
__device__ __forceinline__ uint8_t dsv4_f32_to_e4m3(float x) {
    uint32_t u = __float_as_uint(x);
    uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;
    if (a >= 0x43e00000u) return sign | 0x7e;  // 448
    uint32_t code;
    if (a < 0x3c800000u) {  // below 2^-6: multiples of 2^-9
        float scaled = __uint_as_float(a) * 512.0f;
        code = static_cast<uint32_t>(rintf(scaled));
    } else {
        // Keep 3 mantissa bits with round-to-nearest-even on the dropped 20.
        uint32_t rounded = a + 0x7ffffu + ((a >> 20) & 1u);
        code = ((rounded >> 23) - 120u) << 3 | ((rounded >> 20) & 7u);
    }
    return sign | static_cast<uint8_t>(code > 0x7eu ? 0x7eu : code);
}

// UE8M0 scale byte → 2^(b − 127) (0 is the subnormal 2^-127; 0xff, NaN, is rejected at load).
__device__ __forceinline__ float dsv4_e8m0_to_f32(uint8_t byte) {
    return byte == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(static_cast<uint32_t>(byte) << 23);
}

// E2M1 code (low 4 bits) → f32.
__device__ __forceinline__ float dsv4_e2m1_to_f32(uint32_t code) {
    float magnitude;
    switch (code & 7u) {
        case 0: magnitude = 0.0f; break;
        case 1: magnitude = 0.5f; break;
        case 2: magnitude = 1.0f; break;
        case 3: magnitude = 1.5f; break;
        case 4: magnitude = 2.0f; break;
        case 5: magnitude = 3.0f; break;
        case 6: magnitude = 4.0f; break;
        default: magnitude = 6.0f; break;
    }
    return (code & 8u) ? -magnitude : magnitude;
}

// Nearest E2M1 code to `x` (sign in bit 3), ties to even; magnitudes beyond 6 saturate. As
// dsv4-formats' `f32_to_e2m1`: the code counts the midpoints below |x|, and a tie on an odd
// midpoint (0.75, 1.75, 3.5) goes up to the even code; NaN gives the code of ±0.
__device__ __forceinline__ uint8_t dsv4_f32_to_e2m1(float x) {
    uint8_t sign = (__float_as_uint(x) >> 31) ? 8 : 0;
    float a = fabsf(x);
    uint32_t code = (a > 0.25f) + (a > 0.75f) + (a > 1.25f) + (a > 1.75f) + (a > 2.5f) + (a > 3.5f) + (a > 5.0f);
    if (a == 0.75f || a == 1.75f || a == 3.5f) code += 1;
    return sign | static_cast<uint8_t>(code);
}

// The UE8M0 byte of the smallest power of two at or above `x` (2^ceil(log2 x)), `x` clamped into
// [2^-127, f32::MAX] first; never the NaN byte 0xff. As dsv4-formats' `ue8m0_ceil`.
__device__ __forceinline__ uint8_t dsv4_ue8m0_ceil(float x) {
    const float smallest = __uint_as_float(0x00400000u);  // 2^-127, byte 0
    if (x < smallest) x = smallest;
    if (x > __uint_as_float(0x7f7fffffu)) x = __uint_as_float(0x7f7fffffu);
    if (x < __uint_as_float(0x00800000u)) return x <= smallest ? 0 : 1;  // subnormal: 2^-127 or 2^-126
    uint32_t bits = __float_as_uint(x);
    uint32_t exponent = static_cast<uint8_t>(bits >> 23);
    if ((bits & 0x007fffffu) == 0) return static_cast<uint8_t>(exponent);
    return static_cast<uint8_t>(exponent + 1 > 0xfeu ? 0xfeu : exponent + 1);
}

// Sum over the 32 lanes of a full warp, every lane getting it (butterfly: same order on every lane).
template <class T>
__device__ __forceinline__ T dsv4_warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Max over the 32 lanes of a full warp.
__device__ __forceinline__ float dsv4_warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024), every thread getting
// it; `scratch` is 32 values of shared memory. Contains two __syncthreads.
template <class T>
__device__ __forceinline__ T dsv4_block_sum(T v, T* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = dsv4_warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T total = 0;
    for (unsigned w = 0; w < warps; ++w) total += scratch[w];
    __syncthreads();
    return total;
}

// Max over a block of `blockDim.x` threads (a multiple of 32), every thread getting it; fmaxf
// skips NaNs as Rust's f32::max does, and a max does not depend on the order it is taken in.
// `scratch` is 32 floats of shared memory. Contains two __syncthreads.
__device__ __forceinline__ float dsv4_block_max(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = dsv4_warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
    for (unsigned w = 1; w < warps; ++w) m = fmaxf(m, scratch[w]);
    __syncthreads();
    return m;
}
