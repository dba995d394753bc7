// Sparse attention over the single key head every query head shares (K = V), the twin of
// dsv4-kernels' `attend::sparse_attend` (docs/model.md §4.3). One launch serves a whole chunk:
// block (t, g) computes query token t's heads 8g .. 8g + 7 over that token's keys, the window of
// raw keys then its compressed entries, streamed through shared memory in tiles of 32 keys with
// an online softmax (running max and sum per head, in f32). Every key of a tile is decoded once
// and serves the block's 8 heads; memory is one tile and the queries, whatever the key count.
//
// The query at position p sees window positions max(p + 1 − window, 0) ..= p, which come from
// (csrc/cache.cuh):
// - window position j ≥ p0 (the current chunk): `fresh`, f32 rows of d values, row j − p0
//   (already rounded through the cache format by the caller);
// - window position j < p0: slot j % ring_slots of the ring, an entry in `ring_format`;
// then its compressed entries, entry e read from the paged stream `pages` (`per_page` entries a
// page) in `entry_format`: the first ⌊(p + 1)/ratio⌋ (mode CLOSED, HCA) or its own list of entry
// indices (mode SELECTED, CSA), row t of `indices` (k u32 values at indices + t·k) of which the
// first lens[t] (at most k) are in use, in any order, duplicates counted as often as listed. A
// listed index ≥ entry_count is skipped (it would be a caller bug, never a stray read).
//
// Maths per head h of the query at position p: s_j = scale · (q_h · key_j); with M the max over
// the sink and every s_j, o_h = Σ_j exp(s_j − M) · key_j / (exp(sink_h − M) + Σ_j exp(s_j − M));
// then the last `rope` dims of o_h, pairs (nope + 2i, nope + 2i + 1), rotated by −p·inv_freq[i].
#include "cache.cuh"

// Loops over the fixed head and dim counts unrolled on the GPU, so `acc` stays in registers
// (the host compiler does not know the pragma).
#if defined(__CUDACC__)
#define ATTEND_UNROLL _Pragma("unroll")
#else
#define ATTEND_UNROLL
#endif

// Heads per block, keys per tile; a thread per (head, key) computes the scores.
static constexpr uint32_t kAttendHeads = 8;
static constexpr uint32_t kAttendKeys = 32;
static constexpr uint32_t kAttendThreads = kAttendHeads * kAttendKeys;
// Output dims each thread accumulates (dims i ≡ threadIdx.x mod 256): d ≤ 1024.
static constexpr uint32_t kAttendDimsPerThread = 4;
// A tile row that holds no key (a skipped index): zeros, score −∞.
static constexpr uint32_t kAttendAbsent = 0xffffffffu;

// Which compressed entries a query sees (dsv4-kernels' cuda::attend::CompressedKeys).
enum Dsv4AttendMode : uint32_t {
    DSV4_ATTEND_WINDOW = 0,    // none
    DSV4_ATTEND_CLOSED = 1,    // the first ⌊(p + 1)/ratio⌋
    DSV4_ATTEND_SELECTED = 2,  // indices[t·k ..][.. lens[t]]
};

// q and out: T × heads × d f32 (token t at position q0 + t); sinks: `heads` logits; inv_freq:
// rope/2 angles per position. Grid (T, ⌈heads/8⌉), 256 threads, dynamic shared memory
// (8 + 32) · (d | 1) floats. d ≤ 1024, rope even and ≤ d.
DSV4_KERNEL void sparse_attend(const float* q, float* out, const float* sinks, const float* inv_freq, uint32_t heads,
                               uint32_t d, uint32_t rope, float scale, uint32_t q0, uint32_t window,
                               const uint8_t* ring, uint32_t ring_slots, uint32_t ring_format, const float* fresh,
                               uint32_t p0, const uint64_t* pages, uint32_t per_page, uint32_t entry_count,
                               uint32_t entry_format, uint32_t mode, uint32_t ratio, const uint32_t* indices,
                               const uint32_t* lens, uint32_t k) {
    // Rows of an odd number of floats: the 32 keys a warp scores fall in 32 different banks.
    DSV4_DYNAMIC_SHARED(float, shared);
    __shared__ const uint8_t* row_entry[kAttendKeys];  // this tile's keys: where, and in which format
    __shared__ uint32_t row_format[kAttendKeys];
    __shared__ float weights[kAttendHeads * kAttendKeys];  // scores, then exp(s − running max)
    __shared__ float rescale[kAttendHeads];                // exp(old max − new max) of this tile
    __shared__ float denominator[kAttendHeads];

    const uint32_t tid = threadIdx.x;
    const uint32_t t = blockIdx.x, h0 = blockIdx.y * kAttendHeads;
    const uint32_t block_heads = min(kAttendHeads, heads - h0);
    const uint32_t stride = d | 1u;
    float* queries = shared;                          // kAttendHeads rows
    float* tile = shared + kAttendHeads * stride;     // kAttendKeys rows, at the end the outputs
    const uint32_t p = q0 + t;
    const uint32_t lo = p + 1 > window ? p + 1 - window : 0;
    const uint32_t in_window = p + 1 - lo;
    uint32_t seen = 0;
    const uint32_t* chosen = nullptr;
    if (mode == DSV4_ATTEND_CLOSED && ratio > 0) {
        seen = min((p + 1) / ratio, entry_count);
    } else if (mode == DSV4_ATTEND_SELECTED) {
        seen = min(lens[t], k);
        chosen = indices + static_cast<size_t>(t) * k;
    }
    const uint32_t n = in_window + seen;
    const uint32_t ring_bytes = dsv4_kv_entry_bytes(ring_format, d, rope);
    const uint32_t entry_bytes = dsv4_kv_entry_bytes(entry_format, d, rope);

    for (uint32_t x = tid; x < block_heads * d; x += kAttendThreads) {
        uint32_t h = x / d, i = x - h * d;
        queries[h * stride + i] = q[(static_cast<size_t>(t) * heads + h0 + h) * d + i];
    }
    // Thread h < block_heads keeps head h's running max and sum, both starting from the sink.
    float run_max = 0.0f, run_sum = 0.0f;
    if (tid < block_heads) {
        run_max = sinks[h0 + tid];
        run_sum = 1.0f;
    }
    float acc[kAttendDimsPerThread][kAttendHeads];
ATTEND_UNROLL
    for (uint32_t r = 0; r < kAttendDimsPerThread; ++r) {
ATTEND_UNROLL
        for (uint32_t h = 0; h < kAttendHeads; ++h) acc[r][h] = 0.0f;
    }

    for (uint32_t base = 0; base < n; base += kAttendKeys) {
        const uint32_t count = min(kAttendKeys, n - base);
        // Where each key of the tile lives. (The previous tile's last reads of these were before
        // its score barrier.)
        if (tid < count) {
            const uint32_t j = base + tid;
            const uint8_t* entry = nullptr;
            uint32_t format = kAttendAbsent;
            if (j < in_window) {
                const uint32_t position = lo + j;
                if (position >= p0) {
                    entry = reinterpret_cast<const uint8_t*>(fresh + static_cast<size_t>(position - p0) * d);
                    format = DSV4_KV_F32;
                } else if (ring_slots > 0) {
                    entry = ring + static_cast<size_t>(position % ring_slots) * ring_bytes;
                    format = ring_format;
                }
            } else {
                const uint32_t c = j - in_window;
                const uint32_t index = chosen ? chosen[c] : c;
                if (index < entry_count && per_page > 0) {
                    entry = dsv4_paged_entry(pages, per_page, entry_bytes, index);
                    format = entry_format;
                }
            }
            row_entry[tid] = entry;
            row_format[tid] = format;
        }
        __syncthreads();
        // Decode the tile (every thread is past its reads of the previous one).
        for (uint32_t x = tid; x < count * d; x += kAttendThreads) {
            uint32_t jj = x / d, i = x - jj * d;
            uint32_t format = row_format[jj];
            tile[jj * stride + i] = format == kAttendAbsent ? 0.0f : dsv4_kv_value(format, row_entry[jj], d, rope, i);
        }
        __syncthreads();
        // Scores: thread (h, jj) = (tid / 32, tid % 32), a warp per head. Four partial sums in a
        // fixed order, for the GPU's instruction-level parallelism.
        {
            const uint32_t h = tid / kAttendKeys, jj = tid % kAttendKeys;
            float s = -INFINITY;
            if (h < block_heads && jj < count && row_format[jj] != kAttendAbsent) {
                const float* qh = queries + h * stride;
                const float* key = tile + jj * stride;
                float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                uint32_t i = 0;
                for (; i + 4 <= d; i += 4) {
ATTEND_UNROLL
                    for (uint32_t u = 0; u < 4; ++u) part[u] += qh[i + u] * key[i + u];
                }
                for (; i < d; ++i) part[0] += qh[i] * key[i];
                s = ((part[0] + part[1]) + (part[2] + part[3])) * scale;
            }
            weights[h * kAttendKeys + jj] = s;
        }
        __syncthreads();
        // Online softmax, one thread per head in key order: the new max, the factor that moves
        // the old sums onto it, the tile's weights.
        if (tid < kAttendHeads) {
            float* w = weights + tid * kAttendKeys;
            if (tid < block_heads) {
                float tile_max = run_max;
                for (uint32_t jj = 0; jj < count; ++jj) tile_max = fmaxf(tile_max, w[jj]);
                const float factor = expf(run_max - tile_max);
                float sum = 0.0f;
                for (uint32_t jj = 0; jj < count; ++jj) {
                    w[jj] = expf(w[jj] - tile_max);
                    sum += w[jj];
                }
                run_sum = run_sum * factor + sum;
                run_max = tile_max;
                rescale[tid] = factor;
            } else {
                for (uint32_t jj = 0; jj < count; ++jj) w[jj] = 0.0f;
                rescale[tid] = 1.0f;
            }
        }
        __syncthreads();
        // Weighted sums of the keys (the values), each thread its dims for every head.
ATTEND_UNROLL
        for (uint32_t r = 0; r < kAttendDimsPerThread; ++r) {
            const uint32_t i = tid + r * kAttendThreads;
            if (i < d) {
ATTEND_UNROLL
                for (uint32_t h = 0; h < kAttendHeads; ++h) acc[r][h] *= rescale[h];
                for (uint32_t jj = 0; jj < count; ++jj) {
                    const float v = tile[jj * stride + i];
ATTEND_UNROLL
                    for (uint32_t h = 0; h < kAttendHeads; ++h) acc[r][h] += weights[h * kAttendKeys + jj] * v;
                }
            }
        }
    }

    if (tid < block_heads) denominator[tid] = run_sum;
    __syncthreads();  // also: every thread is past its reads of the last tile
    float* outputs = tile;
ATTEND_UNROLL
    for (uint32_t r = 0; r < kAttendDimsPerThread; ++r) {
        const uint32_t i = tid + r * kAttendThreads;
        if (i < d) {
ATTEND_UNROLL
            for (uint32_t h = 0; h < kAttendHeads; ++h) {
                if (h < block_heads) outputs[h * stride + i] = acc[r][h] / denominator[h];
            }
        }
    }
    __syncthreads();
    // The rotary dims rotated back by the query's position (a pair's two values are needed by
    // both of its threads, hence the pass through shared memory), then the output.
    const uint32_t nope = d - rope;
    const float position = static_cast<float>(p);
    for (uint32_t x = tid; x < block_heads * d; x += kAttendThreads) {
        uint32_t h = x / d, i = x - h * d;
        const float* o = outputs + h * stride;
        float v = o[i];
        if (i >= nope) {
            const uint32_t pair = (i - nope) / 2;
            const float a = o[nope + 2 * pair], b = o[nope + 2 * pair + 1];
            const float angle = position * inv_freq[pair];
            const float sn = -sinf(angle), cs = cosf(angle);
            v = ((i - nope) & 1u) ? a * sn + b * cs : a * cs - b * sn;
        }
        out[(static_cast<size_t>(t) * heads + h0 + h) * d + i] = v;
    }
}
DSV4_SIM_ENTRY(sparse_attend)
