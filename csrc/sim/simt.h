// The host's SIMT emulation: what a kernel file in csrc/ sees of CUDA when it is compiled by the
// host C++ compiler (`--device cuda-sim`). Every CUDA thread is a fiber; a block's fibers run on
// one OS thread, blocks spread over several. Collectives (__syncthreads, __syncwarp, warp
// shuffles and votes) are points where a fiber waits until every participant has arrived; a
// collective naming a lane that is missing or has exited, and a block in which no fiber can make
// progress, are faults that end the launch with a message. The fibers of a block run in the
// order a launch asks for (forward, reverse or seeded random), so a kernel whose result depends
// on an order CUDA does not promise shows it in the twin tests.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// One copy per OS thread, so per running block (a block runs on one OS thread at a time).
#define __shared__ static thread_local

struct uint3 {
    unsigned x, y, z;
};

// CUDA's vector types the kernels use, with the device's alignment.
struct alignas(16) float4 {
    float x, y, z, w;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Variables, not macros, so CUDA-aware headers still compile; the scheduler sets them at each
// switch to a fiber.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace dsv4sim {

// The collectives the scheduler knows.
enum class Collective : uint8_t { SyncWarp, Shfl, ShflXor, ShflUp, ShflDown, Ballot, Any, All, ReduceAdd };

// This lane's result of a warp collective over the lanes of `mask`.
uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width);
// Waits until every thread of the block has arrived.
void sync_threads();
// Ends the launch with a message (a kernel bug the emulation found).
[[noreturn]] void fault(const char* message);
// The block's dynamic shared memory (poisoned with 0xff at block start).
unsigned char* dynamic_shared();

// A kernel's host launch entry: unpacks `cuLaunchKernel`-style parameters and calls it.
using Entry = void (*)(void** params);
struct Registration {
    Registration(const char* name, Entry entry);
};

template <class... A, size_t... I>
void invoke_unpacked(void (*kernel)(A...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(params[I])...);
}

template <class... A>
void invoke(void (*kernel)(A...), void** params) {
    invoke_unpacked(kernel, params, std::index_sequence_for<A...>{});
}

template <class T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffled type");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
T from_bits(uint64_t bits) {
    T v;
    memcpy(&v, &bits, sizeof(T));
    return v;
}

}  // namespace dsv4sim

#define DSV4_KERNEL extern "C"
#define DSV4_SIM_ENTRY(kernel)                                                                      \
    static ::dsv4sim::Registration dsv4_sim_registration_##kernel(                                  \
        #kernel, [](void** params) { ::dsv4sim::invoke(kernel, params); });
#define DSV4_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::dsv4sim::dynamic_shared())

inline void __syncthreads() { dsv4sim::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    dsv4sim::warp_collective(dsv4sim::Collective::SyncWarp, mask, 0, 0, 32);
}
// Blocks run on OS threads that share memory coherently; a fence orders nothing more here.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    using namespace dsv4sim;
    return from_bits<T>(warp_collective(Collective::Shfl, mask, to_bits(v), src, width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    using namespace dsv4sim;
    return from_bits<T>(warp_collective(Collective::ShflXor, mask, to_bits(v), lane_mask, width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    using namespace dsv4sim;
    return from_bits<T>(warp_collective(Collective::ShflUp, mask, to_bits(v), static_cast<int>(delta), width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    using namespace dsv4sim;
    return from_bits<T>(warp_collective(Collective::ShflDown, mask, to_bits(v), static_cast<int>(delta), width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return static_cast<unsigned>(
        dsv4sim::warp_collective(dsv4sim::Collective::Ballot, mask, predicate != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int predicate) {
    return static_cast<int>(dsv4sim::warp_collective(dsv4sim::Collective::Any, mask, predicate != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int predicate) {
    return static_cast<int>(dsv4sim::warp_collective(dsv4sim::Collective::All, mask, predicate != 0, 0, 32));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned value) {
    return static_cast<unsigned>(dsv4sim::warp_collective(dsv4sim::Collective::ReduceAdd, mask, value, 0, 32));
}

inline float __uint_as_float(uint32_t u) { return dsv4sim::from_bits<float>(u); }
inline uint32_t __float_as_uint(float f) { return static_cast<uint32_t>(dsv4sim::to_bits(f)); }
inline float __int_as_float(int32_t i) { return dsv4sim::from_bits<float>(static_cast<uint32_t>(i)); }
inline int32_t __float_as_int(float f) { return static_cast<int32_t>(dsv4sim::to_bits(f)); }
template <class T>
T __ldg(const T* p) { return *p; }
inline double __longlong_as_double(long long i) { return dsv4sim::from_bits<double>(static_cast<uint64_t>(i)); }
inline long long __double_as_longlong(double d) { return static_cast<long long>(dsv4sim::to_bits(d)); }
// Rounded-to-nearest double arithmetic that nvcc never fuses into an FMA; the host build targets
// x86-64 without FMA and ISO C++ (no contraction), so the plain operators are the same.
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }

// Blocks run in parallel on OS threads: atomics are the host's.
template <class T>
T atomicAdd(T* address, T value) {
    if constexpr (std::is_floating_point<T>::value) {
        T old, desired;
        __atomic_load(address, &old, __ATOMIC_RELAXED);
        do {
            desired = old + value;
        } while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
        return old;
    } else {
        return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
    }
}
template <class T>
T atomicMax(T* address, T value) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old < value &&
           !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
T atomicMin(T* address, T value) {
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old > value &&
           !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
    __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;
}
template <class T>
T atomicExch(T* address, T value) {
    return __atomic_exchange_n(address, value, __ATOMIC_SEQ_CST);
}

using std::fmaxf;
using std::fminf;
using std::min;
using std::max;
