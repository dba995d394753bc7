// The KV compressors (docs/model.md §4.4–4.5), the twin of dsv4-kernels' `CompressorTail::push`
// fed a chunk token by token: every window of `ratio` (m) tokens that closes within the chunk
// becomes one entry, per channel a softmax over the window's slots of the gate logits (`ape`
// added) applied to the projected values, then RMSNorm'd. HCA pools its m tokens; CSA
// (`overlap`) pools the previous window's A-half (channels 0..width) and then the current
// window's B-half (channels width..2·width), 2m slots.
//
// The tail (one f32 buffer per request per compressor, cw = 2·width under overlap, else width):
//   value[m][cw]        the projected values of the open window's tokens, position q in slot q % m
//   gate[m][cw]         their gate logits with ape[slot] added
//   prev_value[m][width] (overlap only) the last closed window's A-half values
//   prev_gate[m][width]  (overlap only) and its gates
// After tokens 0..p−1 it holds slots 0..(p mod m)−1 of value/gate (the other slots are stale and
// never read) and, once a window has closed, the previous window in prev_*. Only written slots
// are ever read, so a fresh tail needs no initialization.
#include "dsv4.cuh"

// Everything a block needs to find a token's value and gate, in the chunk or in the tail.
struct Dsv4CompressorChunk {
    const float* tail_value;
    const float* tail_gate;
    const float* prev_value;
    const float* prev_gate;
    const float* a;
    const float* g;
    const float* ape;
    uint32_t stride, position, ratio, width, cw, overlap;

    // Value and gate of channel `c` (of cw) of the token at absolute position q (≥ the open
    // window's start when the chunk began).
    __device__ __forceinline__ void token(uint32_t q, uint32_t c, float& gate, float& value) const {
        const uint32_t s = q % ratio;
        if (q >= position) {
            const size_t at = static_cast<size_t>(q - position) * stride + c;
            value = a[at];
            gate = g[at] + ape[static_cast<size_t>(s) * cw + c];
        } else {
            value = tail_value[static_cast<size_t>(s) * cw + c];
            gate = tail_gate[static_cast<size_t>(s) * cw + c];
        }
    }

    // Slot j of entry w's channel `ch`: under overlap slots 0..m−1 are the previous window's
    // A-half (from prev_* when that window closed before the chunk), m..2m−1 the current
    // window's B-half; otherwise slots 0..m−1 are the window.
    __device__ __forceinline__ void slot(uint32_t w, uint32_t first_entry, uint32_t j, uint32_t ch, float& gate,
                                         float& value) const {
        if (overlap && j < ratio) {
            if (w == first_entry) {
                value = prev_value[static_cast<size_t>(j) * width + ch];
                gate = prev_gate[static_cast<size_t>(j) * width + ch];
            } else {
                token(ratio * (w - 1) + j, ch, gate, value);
            }
            return;
        }
        const uint32_t s = overlap ? j - ratio : j;
        token(ratio * w + s, (overlap ? width : 0) + ch, gate, value);
    }
};

// Entry w into `row` (width values): per channel the max of the slots' gates, the sum of
// exp(gate − max), then Σ exp(gate − max) / sum · value, each in slot order as the CPU does;
// then RMSNorm with `norm`. Entry 0 of an overlapping series has no previous window: its
// slots would have gate −∞ and add exact zeros, so they are skipped. Contains __syncthreads.
__device__ void dsv4_compressor_entry(const Dsv4CompressorChunk& k, uint32_t w, uint32_t first_entry,
                                      const float* norm, float eps, float* row, float* scratch) {
    const uint32_t slots = k.overlap ? 2 * k.ratio : k.ratio;
    const uint32_t j0 = (k.overlap && w == 0) ? k.ratio : 0;
    float squares = 0.0f;
    for (uint32_t ch = threadIdx.x; ch < k.width; ch += blockDim.x) {
        float gate, value, max = -INFINITY;
        for (uint32_t j = j0; j < slots; ++j) {
            k.slot(w, first_entry, j, ch, gate, value);
            max = fmaxf(max, gate);
        }
        float sum = 0.0f;
        for (uint32_t j = j0; j < slots; ++j) {
            k.slot(w, first_entry, j, ch, gate, value);
            sum += expf(gate - max);
        }
        float pooled = 0.0f;
        for (uint32_t j = j0; j < slots; ++j) {
            k.slot(w, first_entry, j, ch, gate, value);
            pooled += expf(gate - max) / sum * value;
        }
        row[ch] = pooled;
        squares += pooled * pooled;
    }
    const float r = 1.0f / sqrtf(dsv4_block_sum(squares, scratch) / static_cast<float>(k.width) + eps);
    for (uint32_t ch = threadIdx.x; ch < k.width; ch += blockDim.x) row[ch] = norm[ch] * (row[ch] * r);
}

// One chunk of `count` tokens from absolute `position` through a compressor: `a` and `g` are
// the chunk's value and raw gate projections (row t at t·stride, cw values each), `ape` the
// gate bias by slot (m × cw), `norm` the entries' RMSNorm weight (width). Writes the entries
// that close within the chunk, w = position / m … (position + count) / m − 1, as rows of
// `width` at `out` (row w − position / m), and brings `tail` up to position + count.
//
// One launch for the chunk, grid 1 + max(0, n − h) where n is the number of closed entries and h
// = min(n, 2) under overlap, min(n, 1) otherwise; blockDim.x a multiple of 32. Only the first
// entry (and under overlap the second, whose previous window is the first's) can read the
// tail; block 0 pools those, waits, then updates the tail, so no block reads a tail slot that
// this launch overwrites. Block b ≥ 1 pools entry w0 + h − 1 + b from the chunk alone.
DSV4_KERNEL void compress_pool(float* tail, const float* a, const float* g, uint32_t stride, uint32_t count,
                               uint32_t position, const float* ape, const float* norm, float eps, uint32_t ratio,
                               uint32_t width, uint32_t overlap, float* out) {
    __shared__ float scratch[32];
    const uint32_t cw = overlap ? 2 * width : width;
    float* tail_value = tail;
    float* tail_gate = tail + static_cast<size_t>(ratio) * cw;
    float* prev_value = tail + 2 * static_cast<size_t>(ratio) * cw;
    float* prev_gate = prev_value + static_cast<size_t>(ratio) * width;
    const Dsv4CompressorChunk k{tail_value, tail_gate, prev_value, prev_gate, a, g, ape,
                                stride, position, ratio, width, cw, overlap};
    const uint32_t w0 = position / ratio, end = position + count, n = end / ratio - w0;
    const uint32_t head = n < (overlap ? 2u : 1u) ? n : (overlap ? 2u : 1u);
    if (blockIdx.x > 0) {
        const uint32_t w = w0 + head - 1 + blockIdx.x;
        if (w < w0 + n) dsv4_compressor_entry(k, w, w0, norm, eps, out + static_cast<size_t>(w - w0) * width, scratch);
        return;
    }
    for (uint32_t w = w0; w < w0 + head; ++w)
        dsv4_compressor_entry(k, w, w0, norm, eps, out + static_cast<size_t>(w - w0) * width, scratch);
    __syncthreads();  // every read of the old tail is done
    if (overlap && n > 0) {
        // The last closed window's A-half becomes the previous window (from the old tail where
        // its tokens came before the chunk).
        const uint32_t last = w0 + n - 1;
        for (uint32_t e = threadIdx.x; e < ratio * width; e += blockDim.x) {
            const uint32_t s = e / width, ch = e % width;
            float gate, value;
            k.token(ratio * last + s, ch, gate, value);
            prev_value[e] = value;
            prev_gate[e] = gate;
        }
        __syncthreads();  // the old tail slots just read may now be overwritten
    }
    // The open window's tokens that came in this chunk, each into its slot.
    const uint32_t open = (end / ratio) * ratio, from = open > position ? open : position;
    const size_t elements = static_cast<size_t>(end - from) * cw;
    for (size_t e = threadIdx.x; e < elements; e += blockDim.x) {
        const uint32_t q = from + static_cast<uint32_t>(e / cw), c = static_cast<uint32_t>(e % cw);
        const size_t slot = static_cast<size_t>(q % ratio) * cw + c, at = static_cast<size_t>(q - position) * stride + c;
        tail_value[slot] = a[at];
        tail_gate[slot] = g[at] + ape[slot];
    }
}
DSV4_SIM_ENTRY(compress_pool)
