// RMSNorm, the twin of dsv4-kernels' `ops::rms_norm`: one block per row.
#include "dsv4.cuh"

// x[r] ← x[r] · rsqrt(mean(x[r]²) + eps), times `weight` when it is not null, for row r =
// blockIdx.x of `d` values. blockDim.x is a multiple of 32.
DSV4_KERNEL void rms_norm(float* x, const float* weight, uint32_t d, float eps) {
    __shared__ float scratch[32];
    float* row = x + static_cast<size_t>(blockIdx.x) * d;
    float squares = 0.0f;
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) squares += row[i] * row[i];
    float r = 1.0f / sqrtf(dsv4_block_sum(squares, scratch) / static_cast<float>(d) + eps);
    for (uint32_t i = threadIdx.x; i < d; i += blockDim.x) row[i] = weight ? weight[i] * (row[i] * r) : row[i] * r;
}
DSV4_SIM_ENTRY(rms_norm)
