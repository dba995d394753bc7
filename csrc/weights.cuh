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
