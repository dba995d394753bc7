// Layout and elementwise helpers of the forward: the grouped output projection's regrouping of
// the attention outputs (and back), and scaling a buffer.
#include "dsv4.cuh"

// out[b][a][c] = in[a][b][c] for an [A][B][C] array of f32: token-major heads into group-major
// inputs of the grouped projection, and its group-major parts back into token-major rows.
DSV4_KERNEL void swap_axes(const float* in, float* out, uint32_t a, uint32_t b, uint32_t c) {
    size_t total = static_cast<size_t>(a) * b * c;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        size_t k = i % c, j = (i / c) % b, r = i / (static_cast<size_t>(b) * c);
        out[(j * a + r) * c + k] = in[i];
    }
}
DSV4_SIM_ENTRY(swap_axes)

// x[i] *= factor for the first n values.
DSV4_KERNEL void scale(float* x, uint32_t n, float factor) {
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] *= factor;
}
DSV4_SIM_ENTRY(scale)

// out[i] = in[i] for n float4 values: the copy `dsv4 bench` measures the device's memory
// bandwidth with (16-byte loads and stores, grid-stride).
DSV4_KERNEL void stream_copy(const float4* in, float4* out, uint64_t n) {
    for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<uint64_t>(gridDim.x) * blockDim.x)
        out[i] = in[i];
}
DSV4_SIM_ENTRY(stream_copy)
