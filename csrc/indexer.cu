// The Lightning Indexer's selection (docs/model.md §4.6), the twin of dsv4-kernels'
// `indexer::indexer_topk`: for each CSA query t at position p = q0 + t, every visible indexer key
// e (the first ⌊(p + 1)/m⌋ of a paged stream, csrc/cache.cuh) is scored as
// Σ_h w[t,h] · ReLU(q[t,h,:] · K[e,:]) and the k best are kept, best first, ranked as
// `ops::best_first` does: the larger score first (NaN below everything, +0 above −0, as Rust's
// `total_cmp`), then the lower entry index.
//
// `indexer_topk` gives each (query, split) pair one block that streams its share of the keys in
// tiles through shared memory and keeps a running top-k there: a candidate buffer that, when
// full, is sorted (bitonic; every rank is distinct, so the order is unique) and cut back to k,
// whose k-th rank then rejects worse candidates at once. With one split per query that block
// writes the query's final choice; with several, each writes its own best k and
// `indexer_topk_merge` (the second kernel of the op) selects among them. The ranking is a total
// order, so the result does not depend on the split count, the tile size or block scheduling.
//
// Output rows (`row` = t with one split, t · splits + s per split otherwise): `k` slots of u32
// entry indices best first at `indices[row·k ..]`, their f32 scores at `scores[row·k ..]` and
// the slots in use at `lens[row]` = min(k, keys seen); slots from `lens[row]` on hold
// 0xffffffff and −inf.
#include "cache.cuh"

// Threads per block of both kernels (eight warps).
#define DSV4_INDEX_THREADS 256u
// Keys per tile of `indexer_topk`.
#define DSV4_INDEX_TILE 64u
// Head groups: warp g computes heads g, g + 8, ... of every key in the tile.
#define DSV4_INDEX_GROUPS (DSV4_INDEX_THREADS / 32u)

// A (score, entry) pair as one 64-bit rank, larger = better: the score's `total_cmp` key (NaN
// taken as −inf) above the complement of the entry, so ties go to the lower entry. Every real
// pair ranks above 0, the value of an empty slot.
__device__ __forceinline__ uint64_t dsv4_index_rank(float score, uint32_t entry) {
    uint32_t u = (score != score) ? 0xff800000u : __float_as_uint(score);
    uint32_t key = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<uint64_t>(key) << 32) | (0xffffffffu - entry);
}

__device__ __forceinline__ uint32_t dsv4_index_rank_entry(uint64_t rank) {
    return 0xffffffffu - static_cast<uint32_t>(rank);
}

// Candidate slots for a top-k of `k`: room for k kept plus a full offer of a block, and for 2k so
// that cutting back happens at most once per k new candidates; a power of two for the sort.
// dsv4-kernels/src/cuda/indexer.rs sizes shared memory with the same rule.
__device__ __forceinline__ uint32_t dsv4_index_capacity(uint32_t k) {
    uint32_t need = k + (k > DSV4_INDEX_THREADS ? k : DSV4_INDEX_THREADS);
    uint32_t c = 1;
    while (c < need) c <<= 1;
    return c;
}

// A block's running top-k. The arrays are shared; `count` is each thread's own copy of the
// number of candidates held, kept equal on every thread because every thread computes it from
// the same ballots. Every function is called by all threads of the block together.
struct Dsv4TopK {
    uint64_t* rank;          // `capacity` candidate ranks
    float* score;            // their scores as computed (NaN stays NaN)
    uint64_t* threshold;     // the k-th best rank kept once k are held, else 0 (shared)
    uint32_t* warp_counts;   // 2 × 32 per-warp offer counts, alternating between offers
    uint32_t capacity;
    uint32_t k;
    uint32_t count;
    uint32_t parity;
};

// Sorts the first `n` candidates (n a power of two) best first; ends with a barrier.
__device__ void dsv4_topk_sort(Dsv4TopK& s, uint32_t n) {
    for (uint32_t size = 2; size <= n; size <<= 1) {
        for (uint32_t stride = size >> 1; stride > 0; stride >>= 1) {
            for (uint32_t p = threadIdx.x; p < n / 2; p += blockDim.x) {
                uint32_t i = 2 * p - (p & (stride - 1));  // bit `stride` of i clear
                uint32_t j = i + stride;
                bool descending = (i & size) == 0;
                uint64_t a = s.rank[i], b = s.rank[j];
                if ((a < b) == descending) {
                    s.rank[i] = b;
                    s.rank[j] = a;
                    float t = s.score[i];
                    s.score[i] = s.score[j];
                    s.score[j] = t;
                }
            }
            __syncthreads();
        }
    }
}

// Sorts what is held best first and keeps the best k; the k-th then becomes the threshold.
__device__ void dsv4_topk_reduce(Dsv4TopK& s) {
    uint32_t n = 1;
    while (n < s.count) n <<= 1;
    for (uint32_t i = s.count + threadIdx.x; i < n; i += blockDim.x) {
        s.rank[i] = 0;
        s.score[i] = -INFINITY;
    }
    __syncthreads();
    dsv4_topk_sort(s, n);
    if (s.count >= s.k) {
        s.count = s.k;
        if (threadIdx.x == 0) *s.threshold = s.rank[s.k - 1];
    }
    __syncthreads();
}

// Each thread offers at most one candidate (`valid`); at most `most` threads (block-uniform,
// at most blockDim.x) offer. Candidates that rank below the threshold are dropped at once, the
// others appended in thread order.
__device__ void dsv4_topk_offer(Dsv4TopK& s, bool valid, float score, uint32_t entry, uint32_t most) {
    if (s.count + most > s.capacity) dsv4_topk_reduce(s);
    uint64_t r = valid ? dsv4_index_rank(score, entry) : 0;
    bool take = valid && r > *s.threshold;
    unsigned ballot = __ballot_sync(0xffffffffu, take);
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    uint32_t* counts = s.warp_counts + 32 * s.parity;
    if (lane == 0) counts[warp] = static_cast<uint32_t>(__popc(ballot));
    __syncthreads();
    uint32_t before = 0, total = 0;
    for (uint32_t w = 0; w < warps; ++w) {
        if (w == warp) before = total;
        total += counts[w];
    }
    if (take) {
        uint32_t at = s.count + before + static_cast<uint32_t>(__popc(ballot & ((1u << lane) - 1u)));
        s.rank[at] = r;
        s.score[at] = score;
    }
    s.count += total;
    // The next offer writes the other half, so no barrier is needed before it: a thread can
    // only come back to this half after every thread has passed the next offer's barrier.
    s.parity ^= 1u;
}

// Writes the best k held, best first, into one output row.
__device__ void dsv4_topk_write(Dsv4TopK& s, uint32_t* indices, float* scores, uint32_t* len) {
    dsv4_topk_reduce(s);
    for (uint32_t i = threadIdx.x; i < s.k; i += blockDim.x) {
        bool used = i < s.count;
        indices[i] = used ? dsv4_index_rank_entry(s.rank[i]) : 0xffffffffu;
        scores[i] = used ? s.score[i] : -INFINITY;
    }
    if (threadIdx.x == 0) *len = s.count;
}

// Lays the top-k's shared arrays out from `base` (8-byte aligned); returns the first byte after.
__device__ unsigned char* dsv4_topk_init(Dsv4TopK& s, unsigned char* base, uint32_t k) {
    s.capacity = dsv4_index_capacity(k);
    s.k = k;
    s.count = 0;
    s.parity = 0;
    s.threshold = reinterpret_cast<uint64_t*>(base);
    s.rank = s.threshold + 1;
    s.score = reinterpret_cast<float*>(s.rank + s.capacity);
    s.warp_counts = reinterpret_cast<uint32_t*>(s.score + s.capacity);
    if (threadIdx.x == 0) *s.threshold = 0;
    return reinterpret_cast<unsigned char*>(s.warp_counts + 64);
}

// Scores and selects. Grid (T, splits), DSV4_INDEX_THREADS threads. `q` is T × heads × dim f32,
// `w` T × heads f32 (the head weights as the twin takes them: any 1/sqrt scaling is already in),
// the keys `n_keys` entries of `dim` values in `format` (Dsv4IndexerFormat), `per_page` to a
// page of `pages`. Query t sees min(⌊(q0 + t + 1)/m⌋, n_keys) keys; split s of them takes the
// s-th run of ⌈visible / splits⌉ keys (rounded up to whole tiles). Dynamic shared memory: see
// `indexer_shared_bytes` in dsv4-kernels/src/cuda/indexer.rs.
DSV4_KERNEL void indexer_topk(const uint64_t* pages, uint32_t per_page, uint32_t format, uint32_t n_keys,
                              const float* q, const float* w, uint32_t q0, uint32_t m, uint32_t heads,
                              uint32_t dim, uint32_t k, uint32_t* indices, float* scores, uint32_t* lens) {
    DSV4_DYNAMIC_SHARED(unsigned char, shared);
    Dsv4TopK top;
    float* qs = reinterpret_cast<float*>(dsv4_topk_init(top, shared, k));  // heads × dim
    float* ws = qs + static_cast<size_t>(heads) * dim;                      // heads
    const uint32_t stride = dim + 1;  // odd row stride: the lanes' keys fall in distinct banks
    float* tile = ws + heads;                                               // TILE × stride
    float* part = tile + DSV4_INDEX_TILE * stride;                          // GROUPS × TILE

    const uint32_t t = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
    const uint32_t row = t * splits + split;
    uint64_t seen = (static_cast<uint64_t>(q0) + t + 1) / m;
    const uint32_t visible = seen < n_keys ? static_cast<uint32_t>(seen) : n_keys;
    uint32_t piece = (visible + splits - 1) / splits;
    piece = (piece + DSV4_INDEX_TILE - 1) / DSV4_INDEX_TILE * DSV4_INDEX_TILE;
    const uint64_t first64 = static_cast<uint64_t>(split) * piece;
    const uint32_t begin = first64 < visible ? static_cast<uint32_t>(first64) : visible;
    const uint32_t end = visible - begin < piece ? visible : begin + piece;

    const float* qt = q + static_cast<size_t>(t) * heads * dim;
    for (uint32_t i = threadIdx.x; i < heads * dim; i += blockDim.x) qs[i] = qt[i];
    for (uint32_t h = threadIdx.x; h < heads; h += blockDim.x) ws[h] = w[static_cast<size_t>(t) * heads + h];

    const uint32_t key_bytes = dsv4_indexer_key_bytes(format, dim);
    const uint32_t lane = threadIdx.x & 31u, group = threadIdx.x >> 5;
    for (uint32_t base = begin; base < end; base += DSV4_INDEX_TILE) {
        const uint32_t n = end - base < DSV4_INDEX_TILE ? end - base : DSV4_INDEX_TILE;
        // Decode the tile's keys (zeros past its end); neighbouring threads read neighbouring
        // values of one key.
        for (uint32_t i = threadIdx.x; i < DSV4_INDEX_TILE * dim; i += blockDim.x) {
            uint32_t j = i / dim, c = i - j * dim;
            float v = 0.0f;
            if (j < n) v = dsv4_indexer_value(format, dsv4_paged_entry(pages, per_page, key_bytes, base + j), dim, c);
            tile[j * stride + c] = v;
        }
        __syncthreads();
        // Warp `group` takes heads group, group + 8, ...; lane takes keys lane and lane + 32.
        // Each (head, key) dot runs over the dims in order; each partial sum over the group's
        // heads in order, from −0 so that a sum of zeros keeps the sign the twin's does.
        const float* k0 = tile + lane * stride;
        const float* k1 = tile + (lane + 32) * stride;
        float p0 = -0.0f, p1 = -0.0f;
        for (uint32_t h = group; h < heads; h += DSV4_INDEX_GROUPS) {
            const float* qh = qs + static_cast<size_t>(h) * dim;
            float d0 = 0.0f, d1 = 0.0f;
            for (uint32_t c = 0; c < dim; ++c) {
                d0 += qh[c] * k0[c];
                d1 += qh[c] * k1[c];
            }
            // ReLU; NaN gives 0 as Rust's `max(0.0)` does.
            p0 += ws[h] * (d0 > 0.0f ? d0 : 0.0f);
            p1 += ws[h] * (d1 > 0.0f ? d1 : 0.0f);
        }
        part[group * DSV4_INDEX_TILE + lane] = p0;
        part[group * DSV4_INDEX_TILE + lane + 32] = p1;
        __syncthreads();
        // The first TILE threads sum their key's groups in order and offer it.
        float score = -0.0f;
        const bool valid = threadIdx.x < n;
        if (threadIdx.x < DSV4_INDEX_TILE) {
            for (uint32_t g = 0; g < DSV4_INDEX_GROUPS; ++g) score += part[g * DSV4_INDEX_TILE + threadIdx.x];
        }
        dsv4_topk_offer(top, valid, score, base + threadIdx.x, DSV4_INDEX_TILE);
    }
    dsv4_topk_write(top, indices + static_cast<size_t>(row) * k, scores + static_cast<size_t>(row) * k, lens + row);
}
DSV4_SIM_ENTRY(indexer_topk)

// The best k of each query's `splits` rows of `indexer_topk` (rows t · splits + s, each sorted
// best first, `part_lens` slots in use) into row t of `indices`, `scores`, `lens`. Grid T,
// DSV4_INDEX_THREADS threads; dynamic shared memory as `indexer_topk_merge`'s launcher says.
DSV4_KERNEL void indexer_topk_merge(const uint32_t* part_indices, const float* part_scores, const uint32_t* part_lens,
                                    uint32_t splits, uint32_t k, uint32_t* indices, float* scores, uint32_t* lens) {
    DSV4_DYNAMIC_SHARED(unsigned char, shared);
    Dsv4TopK top;
    dsv4_topk_init(top, shared, k);
    __syncthreads();
    const uint32_t t = blockIdx.x;
    for (uint32_t s = 0; s < splits; ++s) {
        const size_t row = static_cast<size_t>(t) * splits + s;
        const uint32_t len = part_lens[row] < k ? part_lens[row] : k;
        const uint32_t* ids = part_indices + row * k;
        const float* sc = part_scores + row * k;
        for (uint32_t off = 0; off < len; off += blockDim.x) {
            // A row is sorted best first: once its next slot cannot enter, neither can the rest.
            // Every thread reads the same values, so the choice is the block's.
            if (dsv4_index_rank(sc[off], ids[off]) <= *top.threshold) break;
            const uint32_t i = off + threadIdx.x;
            const bool valid = i < len;
            dsv4_topk_offer(top, valid, valid ? sc[i] : 0.0f, valid ? ids[i] : 0u, blockDim.x);
        }
    }
    dsv4_topk_write(top, indices + static_cast<size_t>(t) * k, scores + static_cast<size_t>(t) * k, lens + t);
}
DSV4_SIM_ENTRY(indexer_topk_merge)
