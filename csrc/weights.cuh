// Weights as the checkpoint stores them (docs/model.md §3), read in place by the kernels: never a
// dequantized copy of a matrix. A linear `W` is `[out, inp]`, row-major, in one of the formats
// below; its scales are UE8M0 bytes or little-endian f32 multipliers. The Rust side passes a
// weight as (format, scale kind, data pointer, scales pointer, out, inp) — see
// dsv4-kernels/src/cuda/weights.rs, whose enums carry the same numbers.
#pragma once

#include "dsv4.cuh"

// Element format of a stored weight.
enum Dsv4Format : uint32_t {
    DSV4_F32 = 0,       // f32 elements
    DSV4_BF16 = 1,      // bfloat16 elements
    DSV4_F16 = 2,       // IEEE half elements
    DSV4_FP8_BLOCK = 3, // E4M3 bytes, scales on a [ceil(out/128), ceil(inp/128)] grid
    DSV4_FP4_GROUP = 4, // E2M1 pairs (low nibble = even element) `[out, inp/2]`, scales `[out, inp/32]`
};

// How the scales of a quantized weight are stored.
enum Dsv4ScaleKind : uint32_t {
    DSV4_SCALE_E8M0 = 0,  // one UE8M0 byte per scale
    DSV4_SCALE_F32 = 1,   // one little-endian f32 per scale
};

// A stored weight, as a kernel receives it (its fields are separate kernel parameters).
struct Dsv4Weight {
    uint32_t format, scale_kind;
    const uint8_t* data;
    const uint8_t* scales;
    uint32_t out, inp;
};

__device__ __forceinline__ float dsv4_scale_at(const Dsv4Weight& w, size_t index) {
    if (w.scale_kind == DSV4_SCALE_F32) {
        float s;
        memcpy(&s, w.scales + 4 * index, 4);
        return s;
    }
    return dsv4_e8m0_to_f32(w.scales[index]);
}

// W[o, i], exactly as f32.
__device__ __forceinline__ float dsv4_weight_at(const Dsv4Weight& w, uint32_t o, uint32_t i) {
    size_t at = static_cast<size_t>(o) * w.inp + i;
    switch (w.format) {
        case DSV4_F32: {
            float v;
            memcpy(&v, w.data + 4 * at, 4);
            return v;
        }
        case DSV4_BF16: return dsv4_bf16_to_f32(static_cast<uint16_t>(w.data[2 * at] | (w.data[2 * at + 1] << 8)));
        case DSV4_F16: return dsv4_f16_to_f32(static_cast<uint16_t>(w.data[2 * at] | (w.data[2 * at + 1] << 8)));
        case DSV4_FP8_BLOCK: {
            uint32_t cols = (w.inp + 127) / 128;
            return dsv4_e4m3_to_f32(w.data[at]) * dsv4_scale_at(w, static_cast<size_t>(o / 128) * cols + i / 128);
        }
        default: {
            uint8_t pair = w.data[at / 2];
            uint32_t code = (i & 1u) ? pair >> 4 : pair & 0xfu;
            return dsv4_e2m1_to_f32(code) * dsv4_scale_at(w, static_cast<size_t>(o) * (w.inp / 32) + i / 32);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk readers: the format-specialised inner loops of the kernels that stream a weight. A chunk
// is 8 consecutive inputs of one row starting at a multiple of 8, so it never straddles an FP8
// scale block (128 inputs) or an FP4 scale group (32): it has one scale, and a kernel can sum the
// chunk's unscaled products first and scale once.

constexpr uint32_t DSV4_CHUNK = 8;

// 16 and 8 bytes read with one vector load (the address must be aligned to the size).
struct alignas(16) Dsv4Bytes16 {
    uint32_t u[4];
};
struct alignas(8) Dsv4Bytes8 {
    uint32_t u[2];
};

// E4M3 byte → f32, the value dsv4_e4m3_to_f32 gives, without branches or f32 subnormals (so it
// holds under flush-to-zero too, and costs no microcode assists on the host): exponent and
// mantissa go into f32's fields with the exponent rebiased by 120; a subnormal byte (exponent 0)
// then reads 2^-7·(1 + m/8), and (v − 2^-7)·2 = m·2^-9 recovers it exactly. 0x7f/0xff stay NaN.
__device__ __forceinline__ float dsv4_e4m3_to_f32_fast(uint32_t byte) {
    float v = __uint_as_float(((byte & 0x7fu) << 20) + (120u << 23));
    v = (byte & 0x78u) ? v : (v - 0x1p-7f) * 2.0f;
    v = __uint_as_float(__float_as_uint(v) | ((byte & 0x80u) << 24));
    return (byte & 0x7fu) == 0x7fu ? __uint_as_float(0x7fc00000u) : v;
}

// E2M1 code (low 4 bits) → f32, as dsv4_e2m1_to_f32 but without a branch: twice the magnitudes
// 0, 1, 2, 3, 4, 6, 8, 12 are the nibbles of one constant.
__device__ __forceinline__ float dsv4_e2m1_to_f32_fast(uint32_t code) {
    float magnitude = static_cast<float>((0xC8643210u >> (4u * (code & 7u))) & 0xfu) * 0.5f;
    return __uint_as_float(__float_as_uint(magnitude) | ((code & 8u) << 28));
}

// Whether every chunk of `w` may be read with vector loads: rows of a whole number of 32 inputs
// (so of 16-byte multiples in every format and no chunk past a row's end), 16-byte aligned
// elements and 4-byte aligned f32 scales. Uniform over a launch.
__device__ __forceinline__ bool dsv4_weight_vectorizable(const Dsv4Weight& w) {
    return w.inp % 32u == 0 && (reinterpret_cast<uintptr_t>(w.data) & 15u) == 0 &&
           (w.scale_kind != DSV4_SCALE_F32 || (reinterpret_cast<uintptr_t>(w.scales) & 3u) == 0);
}

// The scale of a chunk at scale index `index`; `aligned`: f32 scales are 4-byte aligned.
__device__ __forceinline__ float dsv4_chunk_scale(const Dsv4Weight& w, size_t index, bool aligned) {
    if (w.scale_kind == DSV4_SCALE_F32 && aligned) return reinterpret_cast<const float*>(w.scales)[index];
    return dsv4_scale_at(w, index);
}

// Inputs k … k+7 of row o of `w` (format F, k < inp a multiple of 8) unscaled into v, returning
// their one scale (1 for the float formats): W[o, k+e] = v[e] · scale, exactly. `vector`: `w` is
// dsv4_weight_vectorizable, and the chunk is read with one or two loads of 4–16 bytes; otherwise
// element by element, inputs past the row's end reading 0.
template <uint32_t F>
__device__ __forceinline__ float dsv4_weight_chunk(const Dsv4Weight& w, uint32_t o, uint32_t k, bool vector,
                                                   float v[DSV4_CHUNK]) {
    const size_t at = static_cast<size_t>(o) * w.inp + k;
    if (vector) {
        if constexpr (F == DSV4_F32) {
            const Dsv4Bytes16* p = reinterpret_cast<const Dsv4Bytes16*>(w.data + 4 * at);
            Dsv4Bytes16 a = p[0], b = p[1];
            for (int e = 0; e < 4; ++e) {
                v[e] = __uint_as_float(a.u[e]);
                v[4 + e] = __uint_as_float(b.u[e]);
            }
            return 1.0f;
        } else if constexpr (F == DSV4_BF16 || F == DSV4_F16) {
            Dsv4Bytes16 a = *reinterpret_cast<const Dsv4Bytes16*>(w.data + 2 * at);
            for (int e = 0; e < 4; ++e) {
                uint16_t lo = static_cast<uint16_t>(a.u[e] & 0xffffu), hi = static_cast<uint16_t>(a.u[e] >> 16);
                v[2 * e] = F == DSV4_BF16 ? dsv4_bf16_to_f32(lo) : dsv4_f16_to_f32(lo);
                v[2 * e + 1] = F == DSV4_BF16 ? dsv4_bf16_to_f32(hi) : dsv4_f16_to_f32(hi);
            }
            return 1.0f;
        } else if constexpr (F == DSV4_FP8_BLOCK) {
            Dsv4Bytes8 a = *reinterpret_cast<const Dsv4Bytes8*>(w.data + at);
            for (int e = 0; e < 8; ++e) v[e] = dsv4_e4m3_to_f32_fast((a.u[e / 4] >> (8 * (e % 4))) & 0xffu);
            size_t cols = (w.inp + 127) / 128;
            return dsv4_chunk_scale(w, (o / 128) * cols + k / 128, true);
        } else {
            // Eight codes in four bytes, the low nibble of each byte first (little-endian load).
            uint32_t codes = *reinterpret_cast<const uint32_t*>(w.data + at / 2);
            for (int e = 0; e < 8; ++e) v[e] = dsv4_e2m1_to_f32_fast(codes >> (4 * e));
            return dsv4_chunk_scale(w, static_cast<size_t>(o) * (w.inp / 32) + k / 32, true);
        }
    }
    for (uint32_t e = 0; e < DSV4_CHUNK; ++e) {
        const size_t i = at + e;
        float value = 0.0f;
        if (k + e < w.inp) {
            if constexpr (F == DSV4_F32) {
                memcpy(&value, w.data + 4 * i, 4);
            } else if constexpr (F == DSV4_BF16 || F == DSV4_F16) {
                uint16_t bits = static_cast<uint16_t>(w.data[2 * i] | (w.data[2 * i + 1] << 8));
                value = F == DSV4_BF16 ? dsv4_bf16_to_f32(bits) : dsv4_f16_to_f32(bits);
            } else if constexpr (F == DSV4_FP8_BLOCK) {
                value = dsv4_e4m3_to_f32_fast(w.data[i]);
            } else {
                value = dsv4_e2m1_to_f32_fast(w.data[i / 2] >> (4 * (i & 1)));
            }
        }
        v[e] = value;
    }
    if constexpr (F == DSV4_FP8_BLOCK) {
        size_t cols = (w.inp + 127) / 128;
        return dsv4_chunk_scale(w, (o / 128) * cols + k / 128, false);
    } else if constexpr (F == DSV4_FP4_GROUP) {
        return dsv4_chunk_scale(w, static_cast<size_t>(o) * (w.inp / 32) + k / 32, false);
    } else {
        return 1.0f;
    }
}
