// The cache on the device (docs/model.md §6): entries in the byte layouts of dsv4-formats'
// cache_codec (each entry self-contained: values, then its scales), held in
// - a window ring: one contiguous buffer of `slots` entries, position p in slot p % slots;
// - paged streams (compressed KV entries, indexer keys): entry i lives in page i / per_page at
//   slot i % per_page, the pages' device addresses listed in a table of uint64_t.
// Kernels read values through the functions below; the encoders that write entries are in
// cache.cu. The format numbers are those of dsv4-kernels/src/cuda/cache.rs.
#pragma once

#include "dsv4.cuh"

// A KV entry's layout (cache_codec::KvFormat).
enum Dsv4KvFormat : uint32_t {
    DSV4_KV_F32 = 0,   // f32 values
    DSV4_KV_BF16 = 1,  // bf16 values
    DSV4_KV_FP8 = 2,   // [nope E4M3][rope bf16][one UE8M0 scale per 64 nope dims, zero-padded to 8]
};

// An indexer key's layout (cache_codec::IndexerFormat).
enum Dsv4IndexerFormat : uint32_t {
    DSV4_INDEX_F32 = 0,   // f32 values
    DSV4_INDEX_BF16 = 1,  // bf16 values
    DSV4_INDEX_FP8 = 2,   // [E4M3 values][f32 scale]
    DSV4_INDEX_FP4 = 3,   // [E2M1 pairs, low nibble first][one UE8M0 scale per 32 values]
};

__device__ __forceinline__ float dsv4_load_bf16(const uint8_t* p) {
    return dsv4_bf16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

__device__ __forceinline__ float dsv4_load_f32(const uint8_t* p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

// Bytes of one KV entry of `width` values whose last `rope` are rotary.
__device__ __forceinline__ uint32_t dsv4_kv_entry_bytes(uint32_t format, uint32_t width, uint32_t rope) {
    if (format == DSV4_KV_F32) return 4 * width;
    if (format == DSV4_KV_BF16) return 2 * width;
    uint32_t nope = width - rope;
    return nope + 2 * rope + ((nope + 63) / 64 + 7) / 8 * 8;
}

// Bytes of one indexer key of `width` values.
__device__ __forceinline__ uint32_t dsv4_indexer_key_bytes(uint32_t format, uint32_t width) {
    switch (format) {
        case DSV4_INDEX_F32: return 4 * width;
        case DSV4_INDEX_BF16: return 2 * width;
        case DSV4_INDEX_FP8: return width + 4;
        default: return (width + 1) / 2 + (width + 31) / 32;
    }
}

// Value i of a KV entry.
__device__ __forceinline__ float dsv4_kv_value(uint32_t format, const uint8_t* entry, uint32_t width, uint32_t rope,
                                               uint32_t i) {
    if (format == DSV4_KV_F32) return dsv4_load_f32(entry + 4 * i);
    if (format == DSV4_KV_BF16) return dsv4_load_bf16(entry + 2 * i);
    uint32_t nope = width - rope;
    if (i >= nope) return dsv4_load_bf16(entry + nope + 2 * (i - nope));
    return dsv4_e4m3_to_f32(entry[i]) * dsv4_e8m0_to_f32(entry[nope + 2 * rope + i / 64]);
}

// Value i of an indexer key.
__device__ __forceinline__ float dsv4_indexer_value(uint32_t format, const uint8_t* key, uint32_t width, uint32_t i) {
    switch (format) {
        case DSV4_INDEX_F32: return dsv4_load_f32(key + 4 * i);
        case DSV4_INDEX_BF16: return dsv4_load_bf16(key + 2 * i);
        case DSV4_INDEX_FP8: return dsv4_e4m3_to_f32(key[i]) * dsv4_load_f32(key + width);
        default: {
            uint8_t pair = key[i / 2];
            uint32_t code = (i & 1u) ? pair >> 4 : pair & 0xfu;
            return dsv4_e2m1_to_f32(code) * dsv4_e8m0_to_f32(key[(width + 1) / 2 + i / 32]);
        }
    }
}

// Entry `index` of a paged stream.
__device__ __forceinline__ const uint8_t* dsv4_paged_entry(const uint64_t* pages, uint32_t per_page, uint32_t entry_bytes,
                                                           uint32_t index) {
    return reinterpret_cast<const uint8_t*>(pages[index / per_page]) + static_cast<size_t>(index % per_page) * entry_bytes;
}
