// Writing cache entries on the device, the twins of dsv4-formats' `KvFormat::encode` and
// `IndexerFormat::encode` (bit for bit), and reading them back as f32 (the twins of the
// decoders, and the backend's way to inspect a cache). Layouts and readers: cache.cuh.
//
// Destinations. A kernel writes row t of its input either into a window ring (`ring` not null:
// slot (position + t) % slots) or into a paged stream (`ring` null: entry first + t, found
// through the page table `pages`). One kernel per codec with the destination as a parameter
// rather than one kernel per destination: the destination is one address computation per
// entry, uniform over the block, while the encoders are the bulk of the code and are best not
// duplicated.
#include "cache.cuh"

// Where row t of a launch goes.
__device__ __forceinline__ uint8_t* dsv4_destination(uint8_t* ring, uint32_t slots, const uint64_t* pages,
                                                     uint32_t per_page, uint32_t first, uint32_t entry_bytes,
                                                     uint32_t t) {
    if (ring) return ring + static_cast<size_t>((first + t) % slots) * entry_bytes;
    uint32_t index = first + t;
    return reinterpret_cast<uint8_t*>(pages[index / per_page]) + static_cast<size_t>(index % per_page) * entry_bytes;
}

__device__ __forceinline__ void dsv4_store_bf16(uint8_t* p, float v) {
    uint16_t bits = dsv4_f32_to_bf16(v);
    p[0] = static_cast<uint8_t>(bits);
    p[1] = static_cast<uint8_t>(bits >> 8);
}

__device__ __forceinline__ void dsv4_store_f32(uint8_t* p, float v) { memcpy(p, &v, 4); }

// The E4M3 code of x at a power-of-two scale s: x / s is exact (s is a power of two, and no
// flush to zero is in effect), and dsv4_f32_to_e4m3 already saturates at ±448 as the
// reference's clamp does (a NaN stays a NaN code).
__device__ __forceinline__ uint8_t dsv4_e4m3_code(float x, float s) { return dsv4_f32_to_e4m3(x / s); }

// Encodes `count` KV entries of `width` values, the last `rope` rotary, from the f32 rows at
// `rows` (row t at rows + t·row_stride) in `format` (Dsv4KvFormat). One block per entry
// (blockIdx.x = t); blockDim.x a multiple of 32. FP8: each warp quantizes whole 64-value nope
// blocks (two values a lane): amax floored at 1e-4, scale byte ue8m0_ceil(amax / 448), codes
// e4m3(x / scale); rope values as bf16; the scale area's padding bytes zero.
DSV4_KERNEL void kv_encode(const float* rows, uint32_t row_stride, uint32_t count, uint32_t format, uint32_t width,
                           uint32_t rope, uint8_t* ring, uint32_t slots, const uint64_t* pages, uint32_t per_page,
                           uint32_t first) {
    const uint32_t t = blockIdx.x;
    if (t >= count) return;
    const float* x = rows + static_cast<size_t>(t) * row_stride;
    const uint32_t entry_bytes = dsv4_kv_entry_bytes(format, width, rope);
    uint8_t* entry = dsv4_destination(ring, slots, pages, per_page, first, entry_bytes, t);
    if (format == DSV4_KV_F32) {
        for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) dsv4_store_f32(entry + 4 * i, x[i]);
        return;
    }
    if (format == DSV4_KV_BF16) {
        for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) dsv4_store_bf16(entry + 2 * i, x[i]);
        return;
    }
    const uint32_t nope = width - rope, blocks = (nope + 63) / 64;
    uint8_t* scales = entry + nope + 2 * rope;
    const uint32_t scale_area = (blocks + 7) / 8 * 8;
    for (uint32_t i = threadIdx.x; i < rope; i += blockDim.x) dsv4_store_bf16(entry + nope + 2 * i, x[nope + i]);
    for (uint32_t i = blocks + threadIdx.x; i < scale_area; i += blockDim.x) scales[i] = 0;
    const uint32_t lane = threadIdx.x & 31u, warps = blockDim.x >> 5;
    for (uint32_t b = threadIdx.x >> 5; b < blocks; b += warps) {
        const uint32_t i0 = 64 * b + lane, i1 = i0 + 32;
        const float v0 = i0 < nope ? x[i0] : 0.0f, v1 = i1 < nope ? x[i1] : 0.0f;
        const float amax = dsv4_warp_max(fmaxf(1e-4f, fmaxf(fabsf(v0), fabsf(v1))));
        const uint8_t byte = dsv4_ue8m0_ceil(amax / 448.0f);
        const float s = dsv4_e8m0_to_f32(byte);
        if (i0 < nope) entry[i0] = dsv4_e4m3_code(v0, s);
        if (i1 < nope) entry[i1] = dsv4_e4m3_code(v1, s);
        if (lane == 0) scales[b] = byte;
    }
}
DSV4_SIM_ENTRY(kv_encode)

// Encodes `count` indexer keys of `width` values from the f32 rows at `rows` (row t at
// rows + t·row_stride) in `format` (Dsv4IndexerFormat). One block per key (blockIdx.x = t);
// blockDim.x a multiple of 32.
// - FP8: one scale for the key, 2^ceil(log2(max(amax, 1e-4) / 448)) stored as an f32 after the
//   codes e4m3(x / scale); the amax is a block-wide max.
// - FP4: each warp quantizes whole 32-value groups (one value a lane): amax floored at 6·2^-126,
//   scale byte ue8m0_ceil(amax / 6), codes e2m1(clamp(x / scale, ±6)); even lanes pack their
//   code with the next lane's as one byte (low nibble first; a missing odd value packs as 0).
DSV4_KERNEL void indexer_encode(const float* rows, uint32_t row_stride, uint32_t count, uint32_t format,
                                uint32_t width, uint8_t* ring, uint32_t slots, const uint64_t* pages,
                                uint32_t per_page, uint32_t first) {
    __shared__ float scratch[32];
    const uint32_t t = blockIdx.x;
    if (t >= count) return;
    const float* x = rows + static_cast<size_t>(t) * row_stride;
    uint8_t* key = dsv4_destination(ring, slots, pages, per_page, first, dsv4_indexer_key_bytes(format, width), t);
    switch (format) {
        case DSV4_INDEX_F32:
            for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) dsv4_store_f32(key + 4 * i, x[i]);
            return;
        case DSV4_INDEX_BF16:
            for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) dsv4_store_bf16(key + 2 * i, x[i]);
            return;
        case DSV4_INDEX_FP8: {
            float amax = 1e-4f;
            for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) amax = fmaxf(amax, fabsf(x[i]));
            amax = dsv4_block_max(amax, scratch);
            const float s = dsv4_e8m0_to_f32(dsv4_ue8m0_ceil(amax / 448.0f));
            for (uint32_t i = threadIdx.x; i < width; i += blockDim.x) key[i] = dsv4_e4m3_code(x[i], s);
            if (threadIdx.x == 0) dsv4_store_f32(key + width, s);
            return;
        }
        default: {
            const uint32_t groups = (width + 31) / 32, lane = threadIdx.x & 31u, warps = blockDim.x >> 5;
            uint8_t* scales = key + (width + 1) / 2;
            // 6 · 2^-126: the scale never drops below the smallest normal f32.
            const float floor = 6.0f * __uint_as_float(0x00800000u);
            for (uint32_t g = threadIdx.x >> 5; g < groups; g += warps) {
                const uint32_t i = 32 * g + lane;
                const float v = i < width ? x[i] : 0.0f;
                const float amax = dsv4_warp_max(fmaxf(floor, fabsf(v)));
                const uint8_t byte = dsv4_ue8m0_ceil(amax / 6.0f);
                const float s = dsv4_e8m0_to_f32(byte);
                float q = v / s;
                q = q < -6.0f ? -6.0f : (q > 6.0f ? 6.0f : q);  // keeps a NaN, as Rust's clamp
                const uint32_t code = i < width ? dsv4_f32_to_e2m1(q) : 0u;
                const uint32_t odd = __shfl_down_sync(0xffffffffu, code, 1);
                if ((lane & 1u) == 0 && i < width) key[i / 2] = static_cast<uint8_t>(code | (odd << 4));
                if (lane == 0) scales[g] = byte;
            }
            return;
        }
    }
}
DSV4_SIM_ENTRY(indexer_encode)

// Decodes `count` entries to f32 rows of `width` at `out` (row r = entry first + r of a paged
// stream, or ring slot (first + r) % slots), through cache.cuh's readers: `indexer` 0 reads KV
// entries in Dsv4KvFormat `format` (the last `rope` values rotary), 1 indexer keys in
// Dsv4IndexerFormat `format`. One block per entry.
DSV4_KERNEL void cache_read(float* out, uint32_t indexer, uint32_t format, uint32_t width, uint32_t rope,
                            const uint8_t* ring, uint32_t slots, const uint64_t* pages, uint32_t per_page,
                            uint32_t first, uint32_t count) {
    const uint32_t r = blockIdx.x;
    if (r >= count) return;
    const uint32_t bytes = indexer ? dsv4_indexer_key_bytes(format, width) : dsv4_kv_entry_bytes(format, width, rope);
    const uint8_t* entry = ring ? ring + static_cast<size_t>((first + r) % slots) * bytes
                                : dsv4_paged_entry(pages, per_page, bytes, first + r);
    float* row = out + static_cast<size_t>(r) * width;
    for (uint32_t i = threadIdx.x; i < width; i += blockDim.x)
        row[i] = indexer ? dsv4_indexer_value(format, entry, width, i) : dsv4_kv_value(format, entry, width, rope, i);
}
DSV4_SIM_ENTRY(cache_read)
