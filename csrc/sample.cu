// Choosing the next token on the device: the twins of dsv4-kernels/src/sample.rs, whose module
// documentation defines the draw (keys ranking logit then id; a canonical tree of f64 sums over
// ids: LEAF ids, then MID leaves, then the mids, each sequentially) so that both give the same
// token for the same logits and draw `u`. One block of a multiple of 32 threads (at most 1024)
// per row; the host reads back the 4-byte token, 0xffffffff when no logit is a candidate.
#include "dsv4.cuh"

#define DSV4_SAMPLE_LEAF 128u
#define DSV4_SAMPLE_MID 32u
#define DSV4_SAMPLE_NONE 0xffffffffu

// As `sample::key`: the logit's bits mapped to an order-preserving unsigned value (−0 folded
// into +0) above the inverted id, so a larger key is a better token.
__device__ __forceinline__ unsigned long long dsv4_sample_key(float logit, uint32_t id) {
    const uint32_t bits = __float_as_uint(logit + 0.0f);
    const uint32_t ordered = (bits >> 31) ? ~bits : (bits | 0x80000000u);
    return (static_cast<unsigned long long>(ordered) << 32) | static_cast<unsigned long long>(~id);
}

// As `sample::exp_nonpositive`, operation for operation, none fused; `inverse_factorials` holds
// 1/13!, 1/12!, ..., 1/0!.
__device__ __forceinline__ double dsv4_exp_nonpositive(double x, const double* inverse_factorials) {
    if (x != x || x < -700.0) return 0.0;
    if (x >= 0.0) return 1.0;
    const double ln2_hi = __longlong_as_double(0x3FE62E42FEE00000LL);
    const double ln2_lo = __longlong_as_double(0x3DEA39EF35793C76LL);
    const double log2_e = __longlong_as_double(0x3FF71547652B82FELL);
    const double k = round(__dmul_rn(x, log2_e));
    const double r = __dsub_rn(__dsub_rn(x, __dmul_rn(k, ln2_hi)), __dmul_rn(k, ln2_lo));
    double p = inverse_factorials[0];
    for (int i = 1; i < 14; ++i) p = __dadd_rn(__dmul_rn(p, r), inverse_factorials[i]);
    const double scale = __longlong_as_double((static_cast<long long>(k) + 1023) << 52);
    return __dmul_rn(p, scale);
}

// Whether id `i` is in the set being summed: a candidate (weight ≥ 0) with a key ≥ `floor`.
__device__ __forceinline__ bool dsv4_sample_in(const float* logits, const double* weights, uint32_t i,
                                               unsigned long long floor) {
    return weights[i] >= 0.0 && dsv4_sample_key(logits[i], i) >= floor;
}

// The canonical sum of the weights of the set with keys ≥ `floor`, every thread getting it; the
// leaves' partial sums are left at partials[0..leaves), the mids' at partials[leaves..).
__device__ double dsv4_sample_sum(const float* logits, const double* weights, uint32_t vocab,
                                  unsigned long long floor, double* partials) {
    const uint32_t leaves = (vocab + DSV4_SAMPLE_LEAF - 1) / DSV4_SAMPLE_LEAF;
    const uint32_t mids = (leaves + DSV4_SAMPLE_MID - 1) / DSV4_SAMPLE_MID;
    for (uint32_t leaf = threadIdx.x; leaf < leaves; leaf += blockDim.x) {
        const uint32_t end = min(vocab, (leaf + 1) * DSV4_SAMPLE_LEAF);
        double p = 0.0;
        for (uint32_t i = leaf * DSV4_SAMPLE_LEAF; i < end; ++i)
            if (dsv4_sample_in(logits, weights, i, floor)) p = __dadd_rn(p, weights[i]);
        partials[leaf] = p;
    }
    __syncthreads();
    for (uint32_t mid = threadIdx.x; mid < mids; mid += blockDim.x) {
        const uint32_t end = min(leaves, (mid + 1) * DSV4_SAMPLE_MID);
        double q = 0.0;
        for (uint32_t leaf = mid * DSV4_SAMPLE_MID; leaf < end; ++leaf) q = __dadd_rn(q, partials[leaf]);
        partials[leaves + mid] = q;
    }
    __syncthreads();
    double total = 0.0;
    for (uint32_t mid = 0; mid < mids; ++mid) total = __dadd_rn(total, partials[leaves + mid]);
    // Every thread has read the mids before a later sum overwrites them.
    __syncthreads();
    return total;
}

// One step of the walk, as `sample::choose`: among `n` children of weights part(i), walked from
// the cumulative weight `*c`, the first whose cumulative end passes `target`, else the last of
// positive weight; `*c` becomes the weight before it. −1 when no child has weight.
template <class Part>
__device__ int dsv4_sample_choose(uint32_t n, Part part, double* c, double target) {
    int last = -1;
    double before_last = *c, cumulative = *c;
    for (uint32_t i = 0; i < n; ++i) {
        const double p = part(i);
        if (p > 0.0) {
            const double end = __dadd_rn(cumulative, p);
            if (target < end) {
                *c = cumulative;
                return static_cast<int>(i);
            }
            last = static_cast<int>(i);
            before_last = cumulative;
            cumulative = end;
        }
    }
    *c = before_last;
    return last;
}

// token[0] ← the argmax of `vocab` logits, lowest id on ties, NaN never chosen; 0xffffffff when
// every logit is NaN or −∞. The twin of `sample::sample_argmax`.
DSV4_KERNEL void sample_argmax(const float* logits, uint32_t vocab, uint32_t* token) {
    __shared__ float best_values[32];
    __shared__ uint32_t best_ids[32];
    float value = -INFINITY;
    uint32_t id = DSV4_SAMPLE_NONE;
    // Ascending ids and a strict comparison: each thread keeps the first of its maxima.
    for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float l = logits[i];
        if (l > value) {
            value = l;
            id = i;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
        const uint32_t other_id = __shfl_xor_sync(0xffffffffu, id, offset);
        if (other_value > value || (other_value == value && other_id < id)) {
            value = other_value;
            id = other_id;
        }
    }
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) {
        best_values[warp] = value;
        best_ids[warp] = id;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    for (unsigned w = 1; w < (blockDim.x >> 5); ++w) {
        if (best_values[w] > value || (best_values[w] == value && best_ids[w] < id)) {
            value = best_values[w];
            id = best_ids[w];
        }
    }
    token[0] = value == -INFINITY ? DSV4_SAMPLE_NONE : id;
}
DSV4_SIM_ENTRY(sample_argmax)

// token[0] ← the token the draw `u` ∈ [0, 1) picks from `vocab` logits under temperature (> 0),
// top_k (0: off) and top_p (1: off), or 0xffffffff when no logit is a candidate. The twin of
// `sample::sample`. `weights` is `vocab` f64 of scratch (a candidate's weight, −1 for others),
// `partials` ⌈vocab/LEAF⌉ + ⌈vocab/(LEAF·MID)⌉ f64. top-k and top-p each find their key floor
// bit by bit from the top: the largest key whose count (top-k) or canonical sum (top-p) of
// kept keys at or above it still reaches the cut.
DSV4_KERNEL void sample(const float* logits, uint32_t vocab, float temperature, uint32_t top_k, float top_p,
                        double u, double* weights, double* partials, uint32_t* token) {
    __shared__ float max_scratch[32];
    __shared__ uint32_t count_scratch[32];
    __shared__ double inverse_factorials[14];
    float largest = -INFINITY;
    for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) largest = fmaxf(largest, logits[i]);
    largest = dsv4_block_max(largest, max_scratch);
    if (largest == -INFINITY) {
        if (threadIdx.x == 0) token[0] = DSV4_SAMPLE_NONE;
        return;
    }
    if (threadIdx.x < 14) {
        const double factorials[14] = {6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0,
                                       40320.0,      5040.0,      720.0,      120.0,     24.0,
                                       6.0,          2.0,         1.0,        1.0};
        inverse_factorials[threadIdx.x] = __ddiv_rn(1.0, factorials[threadIdx.x]);
    }
    __syncthreads();

    // Weights: a +∞ maximum leaves only the +∞ logits, each of weight 1.
    const bool infinite = largest == INFINITY;
    const double inv_t = __ddiv_rn(1.0, static_cast<double>(temperature));
    uint32_t count = 0;
    for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float l = logits[i];
        double w = -1.0;
        if (infinite ? l == INFINITY : (l == l && l != -INFINITY)) {
            w = infinite ? 1.0
                         : dsv4_exp_nonpositive(
                               __dmul_rn(__dsub_rn(static_cast<double>(l), static_cast<double>(largest)), inv_t),
                               inverse_factorials);
            ++count;
        }
        weights[i] = w;
    }
    count = dsv4_block_sum(count, count_scratch);

    unsigned long long floor = 0;
    if (top_k > 0 && top_k < count) {
        for (int bit = 63; bit >= 0; --bit) {
            const unsigned long long trial = floor | (1ull << bit);
            uint32_t above = 0;
            for (uint32_t i = threadIdx.x; i < vocab; i += blockDim.x)
                above += dsv4_sample_in(logits, weights, i, trial) ? 1u : 0u;
            if (dsv4_block_sum(above, count_scratch) >= top_k) floor = trial;
        }
    }
    if (top_p < 1.0f) {
        const double threshold = __dmul_rn(static_cast<double>(top_p), dsv4_sample_sum(logits, weights, vocab, floor, partials));
        unsigned long long nucleus = 0;
        for (int bit = 63; bit >= 0; --bit) {
            const unsigned long long trial = nucleus | (1ull << bit);
            const unsigned long long at = trial > floor ? trial : floor;
            if (dsv4_sample_sum(logits, weights, vocab, at, partials) >= threshold) nucleus = trial;
        }
        if (nucleus > floor) floor = nucleus;
    }

    const double total = dsv4_sample_sum(logits, weights, vocab, floor, partials);
    if (threadIdx.x != 0) return;
    const uint32_t leaves = (vocab + DSV4_SAMPLE_LEAF - 1) / DSV4_SAMPLE_LEAF;
    const uint32_t mids = (leaves + DSV4_SAMPLE_MID - 1) / DSV4_SAMPLE_MID;
    const double target = __dmul_rn(u, total);
    double c = 0.0;
    const int mid = dsv4_sample_choose(mids, [&](uint32_t m) { return partials[leaves + m]; }, &c, target);
    if (mid < 0) {
        token[0] = DSV4_SAMPLE_NONE;
        return;
    }
    const uint32_t first_leaf = static_cast<uint32_t>(mid) * DSV4_SAMPLE_MID;
    const int leaf = dsv4_sample_choose(min(leaves - first_leaf, DSV4_SAMPLE_MID),
                                        [&](uint32_t l) { return partials[first_leaf + l]; }, &c, target);
    if (leaf < 0) {
        token[0] = DSV4_SAMPLE_NONE;
        return;
    }
    const uint32_t first_id = (first_leaf + static_cast<uint32_t>(leaf)) * DSV4_SAMPLE_LEAF;
    const int within = dsv4_sample_choose(
        min(vocab - first_id, DSV4_SAMPLE_LEAF),
        [&](uint32_t i) { return dsv4_sample_in(logits, weights, first_id + i, floor) ? weights[first_id + i] : 0.0; },
        &c, target);
    token[0] = within < 0 ? DSV4_SAMPLE_NONE : first_id + static_cast<uint32_t>(within);
}
DSV4_SIM_ENTRY(sample)
