// The emulation's own checks (host build only): kernels with planted bugs that the SIMT
// emulation must catch, and a correct twin of each, run by dsv4-kernels' tests (cuda_sim.rs).
#include "../dsv4.cuh"

// Reverses each block's slice through shared memory; `synced` = 0 leaves out the barrier, a race
// only some fiber orders show.
DSV4_KERNEL void sim_check_block_reverse(const float* in, float* out, int synced) {
    __shared__ float slice[1024];
    unsigned t = threadIdx.x, base = blockIdx.x * blockDim.x;
    slice[t] = in[base + t];
    if (synced) __syncthreads();
    out[base + t] = slice[blockDim.x - 1 - t];
}
DSV4_SIM_ENTRY(sim_check_block_reverse)

// Each warp's sum through shuffles; `early` > 0 makes lane `early` return before the shuffle.
DSV4_KERNEL void sim_check_warp_sum(const float* in, float* out, int early) {
    if (early > 0 && static_cast<int>(threadIdx.x & 31u) == early) return;
    float v = dsv4_warp_sum(in[blockIdx.x * blockDim.x + threadIdx.x]);
    if ((threadIdx.x & 31u) == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
}
DSV4_SIM_ENTRY(sim_check_warp_sum)

// A barrier only the even threads reach when `divergent` is set.
DSV4_KERNEL void sim_check_barrier(float* out, int divergent) {
    if (!divergent || threadIdx.x % 2 == 0) __syncthreads();
    out[threadIdx.x] = 1.0f;
}
DSV4_SIM_ENTRY(sim_check_barrier)

// Lane 0 waits at a shuffle of the whole warp while the other lanes wait at a barrier: no
// thread can make progress.
DSV4_KERNEL void sim_check_deadlock(float* out) {
    if (threadIdx.x == 0) out[0] = __shfl_sync(0xffffffffu, 1.0f, 0);
    else __syncthreads();
}
DSV4_SIM_ENTRY(sim_check_deadlock)

// Sums of the lanes at offsets `delta` down and up and a ballot of odd lanes, for the shuffle
// semantics at segment edges (width 8).
DSV4_KERNEL void sim_check_shuffles(float* out) {
    unsigned lane = threadIdx.x & 31u;
    float v = static_cast<float>(lane);
    out[lane] = __shfl_down_sync(0xffffffffu, v, 3, 8);
    out[32 + lane] = __shfl_up_sync(0xffffffffu, v, 3, 8);
    out[64 + lane] = __shfl_sync(0xffffffffu, v, 5, 8);
    out[96 + lane] = __shfl_xor_sync(0xffffffffu, v, 9, 8);
    out[128 + lane] = static_cast<float>(__ballot_sync(0xffffffffu, lane & 1u) == 0xaaaaaaaau);
}
DSV4_SIM_ENTRY(sim_check_shuffles)
