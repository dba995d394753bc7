// Token embedding, the twin of the CPU backend's `embed` (dsv4-runtime/src/backend/cpu.rs): row
// `id` of the `[V, D]` table, read in place in its stored format (csrc/weights.cuh) as f32, and
// copied into each of the n hyper-connection streams.
#include "weights.cuh"

// x (`T × n × d` f32) ← for token t = blockIdx.x and column blockIdx.y·blockDim.x + threadIdx.x,
// table[tokens[t], column] into each of the `n` streams. The table is (format, scale_kind, data,
// scales) with `vocab` rows of `d`. An id ≥ vocab writes zeros (the kernel cannot fail and must
// not read past the table; the runtime validates ids before they reach the device).
DSV4_KERNEL void embed(uint32_t format, uint32_t scale_kind, const uint8_t* data, const uint8_t* scales,
                       uint32_t vocab, uint32_t d, const uint32_t* tokens, float* x, uint32_t n) {
    const uint32_t t = blockIdx.x;
    const uint32_t column = blockIdx.y * blockDim.x + threadIdx.x;
    if (column >= d) return;
    const Dsv4Weight table = {format, scale_kind, data, scales, vocab, d};
    const uint32_t id = tokens[t];
    const float value = id < vocab ? dsv4_weight_at(table, id, column) : 0.0f;
    float* streams = x + static_cast<size_t>(t) * n * d + column;
    for (uint32_t s = 0; s < n; ++s) streams[static_cast<size_t>(s) * d] = value;
}
DSV4_SIM_ENTRY(embed)
