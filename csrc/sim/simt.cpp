// The scheduler behind sim/simt.h: fibers for CUDA threads, collectives as waiting points, blocks
// spread over OS threads, and the C entry points the Rust device layer calls (`cuda-sim`).
#include "simt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && !defined(DSV4_SIM_UCONTEXT)
#define DSV4_SIM_FAST_SWITCH 1
#else
#include <ucontext.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

#if DSV4_SIM_FAST_SWITCH
// Saves the callee-saved registers on the current stack, stores its pointer in *save, and resumes
// the stack `load` (a dozen instructions, no system call: swapcontext makes one per switch).
extern "C" void dsv4sim_switch(void** save, void* load);
asm(R"(
    .text
    .globl dsv4sim_switch
    .hidden dsv4sim_switch
    .type dsv4sim_switch,@function
dsv4sim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size dsv4sim_switch, .-dsv4sim_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif

namespace dsv4sim {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kStackBytes = 256 * 1024;
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;
constexpr int kGroupsPerWarp = 8;

enum class State : uint8_t { Ready, Waiting, Exited };

struct Fiber {
#if DSV4_SIM_FAST_SWITCH
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    uint3 tid{};
    State state = State::Ready;
    uint64_t result = 0;
};

// The lanes of one warp waiting at one collective.
struct Group {
    bool active = false;
    Collective op = Collective::SyncWarp;
    unsigned mask = 0, arrived = 0;
    int width = 32;
    uint64_t values[32]{};
    int args[32]{};
};

struct Warp {
    unsigned lanes = 0;   // bit per existing lane (a block's last warp may be partial)
    unsigned exited = 0;  // bit per lane that has returned
    Group groups[kGroupsPerWarp];
};

const char* collective_name(Collective op) {
    switch (op) {
        case Collective::SyncWarp: return "__syncwarp";
        case Collective::Shfl: return "__shfl_sync";
        case Collective::ShflXor: return "__shfl_xor_sync";
        case Collective::ShflUp: return "__shfl_up_sync";
        case Collective::ShflDown: return "__shfl_down_sync";
        case Collective::Ballot: return "__ballot_sync";
        case Collective::Any: return "__any_sync";
        case Collective::All: return "__all_sync";
        case Collective::ReduceAdd: return "__reduce_add_sync";
    }
    return "a collective";
}

uint64_t splitmix(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// What one OS thread needs to run blocks: fiber stacks (reserved once, reused by every launch),
// the block's fibers and warps, its dynamic shared memory, and the state of the running block.
struct Worker {
    unsigned char* stacks = nullptr;
    std::vector<Fiber> fibers = std::vector<Fiber>(kMaxThreads);
    std::vector<Warp> warps;
    std::vector<unsigned char> shared;
#if DSV4_SIM_FAST_SWITCH
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler;
#endif
    Entry entry = nullptr;
    void** params = nullptr;
    unsigned threads = 0, current = 0;
    unsigned at_barrier = 0, exited = 0;
    bool faulted = false;
    std::string message;

    Worker() {
        size_t bytes = kStackBytes * kMaxThreads;
        void* region = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (region == MAP_FAILED) {
            fprintf(stderr, "cuda-sim: cannot reserve %zu bytes of fiber stacks\n", bytes);
            abort();
        }
        stacks = static_cast<unsigned char*>(region);
        // A guard page at the bottom of each stack: an overflow faults instead of corrupting.
        long page = sysconf(_SC_PAGESIZE);
        for (unsigned i = 0; i < kMaxThreads; ++i) mprotect(stacks + i * kStackBytes, static_cast<size_t>(page), PROT_NONE);
    }
    ~Worker() { munmap(stacks, kStackBytes * kMaxThreads); }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
};

thread_local Worker* running = nullptr;

// Workers are kept between launches so their stacks are reserved once.
std::mutex pool_lock;
std::vector<std::unique_ptr<Worker>> idle_workers;

std::unique_ptr<Worker> take_worker() {
    std::lock_guard<std::mutex> guard(pool_lock);
    if (idle_workers.empty()) return std::make_unique<Worker>();
    std::unique_ptr<Worker> w = std::move(idle_workers.back());
    idle_workers.pop_back();
    return w;
}

void return_worker(std::unique_ptr<Worker> w) {
    std::lock_guard<std::mutex> guard(pool_lock);
    idle_workers.push_back(std::move(w));
}

std::vector<std::pair<std::string, Entry>>& registry() {
    static std::vector<std::pair<std::string, Entry>> kernels;
    return kernels;
}

void switch_to_scheduler(Worker& w) {
    Fiber& f = w.fibers[w.current];
#if DSV4_SIM_FAST_SWITCH
    dsv4sim_switch(&f.sp, w.scheduler_sp);
#else
    swapcontext(&f.context, &w.scheduler);
#endif
}

void switch_to_fiber(Worker& w, unsigned i) {
    w.current = i;
    threadIdx = w.fibers[i].tid;
#if DSV4_SIM_FAST_SWITCH
    dsv4sim_switch(&w.scheduler_sp, w.fibers[i].sp);
#else
    swapcontext(&w.scheduler, &w.fibers[i].context);
#endif
}

std::string where(const Worker& w) {
    const uint3& t = w.fibers[w.current].tid;
    char text[96];
    snprintf(text, sizeof text, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z, t.x, t.y, t.z);
    return text;
}

// Records the block's first fault; the scheduler stops the block when control comes back.
void record_fault(Worker& w, const std::string& message) {
    if (!w.faulted) {
        w.faulted = true;
        w.message = message;
    }
}

[[noreturn]] void fault_in_fiber(Worker& w, const std::string& message) {
    record_fault(w, where(w) + ": " + message);
    w.fibers[w.current].state = State::Exited;
    switch_to_scheduler(w);
    abort();  // a faulted fiber is never resumed
}

// Ends the calling fiber: checks that no collective still counts on it.
[[noreturn]] void exit_fiber(Worker& w) {
    Fiber& f = w.fibers[w.current];
    unsigned linear = w.current, lane = linear & 31u;
    Warp& warp = w.warps[linear >> 5];
    for (const Group& g : warp.groups) {
        if (g.active && (g.mask >> lane & 1u) && !(g.arrived >> lane & 1u)) {
            char text[128];
            snprintf(text, sizeof text, "returned while %s with mask 0x%08x waits for it", collective_name(g.op), g.mask);
            fault_in_fiber(w, text);
        }
    }
    if (w.at_barrier > 0) fault_in_fiber(w, "returned while other threads wait at __syncthreads");
    warp.exited |= 1u << lane;
    ++w.exited;
    f.state = State::Exited;
    switch_to_scheduler(w);
    abort();
}

#if DSV4_SIM_FAST_SWITCH
extern "C" [[noreturn]] void dsv4sim_fiber_start() {
    Worker& w = *running;
    w.entry(w.params);
    exit_fiber(w);
}
#else
void fiber_start() {
    Worker& w = *running;
    w.entry(w.params);
    exit_fiber(w);
}
#endif

void prepare_fiber(Worker& w, unsigned i) {
    unsigned char* bottom = w.stacks + static_cast<size_t>(i) * kStackBytes;
#if DSV4_SIM_FAST_SWITCH
    // The first switch pops six zeroed registers and "returns" into dsv4sim_fiber_start with the
    // stack aligned as after a call.
    uintptr_t top = reinterpret_cast<uintptr_t>(bottom + kStackBytes) & ~static_cast<uintptr_t>(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                              // its return address: never used
    *--sp = reinterpret_cast<void*>(&dsv4sim_fiber_start);        // popped by `ret`
    for (int r = 0; r < 6; ++r) *--sp = nullptr;                  // rbp rbx r12 r13 r14 r15
    w.fibers[i].sp = sp;
#else
    ucontext_t& c = w.fibers[i].context;
    getcontext(&c);
    long page = sysconf(_SC_PAGESIZE);
    c.uc_stack.ss_sp = bottom + page;
    c.uc_stack.ss_size = kStackBytes - static_cast<size_t>(page);
    c.uc_link = nullptr;
    makecontext(&c, fiber_start, 0);
#endif
}

// Fiber visiting order of one scheduling round.
void round_order(std::vector<unsigned>& order, unsigned n, int kind, uint64_t& rng) {
    order.resize(n);
    for (unsigned i = 0; i < n; ++i) order[i] = kind == 1 ? n - 1 - i : i;
    if (kind == 2) {
        for (unsigned i = n; i > 1; --i) std::swap(order[i - 1], order[splitmix(rng) % i]);
    }
}

std::string describe_deadlock(const Worker& w) {
    std::string text = "deadlock: no thread can make progress (";
    for (size_t k = 0; k < w.warps.size(); ++k) {
        for (const Group& g : w.warps[k].groups) {
            if (!g.active) continue;
            char part[160];
            snprintf(part, sizeof part, "warp %zu: %s mask 0x%08x has lanes 0x%08x; ", k, collective_name(g.op), g.mask,
                     g.arrived);
            text += part;
        }
    }
    text += std::to_string(w.at_barrier) + " of " + std::to_string(w.threads) + " threads at __syncthreads)";
    return text;
}

// Runs one block to its end; false (with w.message) on a fault.
bool run_block(Worker& w, uint3 block, int order, uint64_t seed) {
    blockIdx = block;
    unsigned n = blockDim.x * blockDim.y * blockDim.z;
    w.threads = n;
    w.at_barrier = w.exited = 0;
    w.warps.assign((n + 31) / 32, Warp{});
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        f.tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
        f.state = State::Ready;
        w.warps[i >> 5].lanes |= 1u << (i & 31u);
        prepare_fiber(w, i);
    }
    if (!w.shared.empty()) memset(w.shared.data(), 0xff, w.shared.size());
    uint64_t rng = seed ^ (0x632be59bd9b4e019ull * (1 + block.x + 65536ull * (block.y + 65536ull * block.z)));
    std::vector<unsigned> visit;
    while (!w.faulted) {
        round_order(visit, n, order, rng);
        bool progressed = false;
        for (unsigned i : visit) {
            if (w.fibers[i].state != State::Ready) continue;
            progressed = true;
            switch_to_fiber(w, i);
            if (w.faulted) break;
        }
        if (w.faulted) break;
        if (w.exited == n) return true;
        if (!progressed) {
            char text[64];
            snprintf(text, sizeof text, "block (%u,%u,%u): ", block.x, block.y, block.z);
            record_fault(w, text + describe_deadlock(w));
        }
    }
    return false;
}

// The lane a shuffle of `lane` reads, or -1 where CUDA gives the lane its own value (a source
// past the edge of its `width` segment).
int source_lane(Collective op, unsigned lane, int arg, int width) {
    int segment = static_cast<int>(lane) & ~(width - 1), l = static_cast<int>(lane);
    int src = op == Collective::Shfl      ? segment + ((arg % width) + width) % width
              : op == Collective::ShflXor ? l ^ arg
              : op == Collective::ShflUp  ? l - arg
                                          : l + arg;
    bool outside = op == Collective::ShflUp ? src < segment : src >= segment + width;
    return op != Collective::Shfl && outside ? -1 : src;
}

// The result a non-shuffle collective gives every lane of its group.
uint64_t vote(const Group& g) {
    uint64_t votes = 0, sum = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(g.mask >> l & 1u)) continue;
        if (g.values[l]) votes |= 1ull << l;
        sum += static_cast<uint32_t>(g.values[l]);
    }
    switch (g.op) {
        case Collective::Ballot: return votes;
        case Collective::Any: return votes != 0;
        case Collective::All: return votes == g.mask;
        case Collective::ReduceAdd: return static_cast<uint32_t>(sum);
        default: return 0;
    }
}

bool is_shuffle(Collective op) {
    return op == Collective::Shfl || op == Collective::ShflXor || op == Collective::ShflUp || op == Collective::ShflDown;
}

}  // namespace

Registration::Registration(const char* name, Entry entry) { registry().emplace_back(name, entry); }

unsigned char* dynamic_shared() { return running->shared.data(); }

void fault(const char* message) { fault_in_fiber(*running, message); }

void sync_threads() {
    Worker& w = *running;
    if (w.exited > 0) fault_in_fiber(w, "__syncthreads after other threads of the block returned");
    w.fibers[w.current].state = State::Waiting;
    if (++w.at_barrier == w.threads) {
        for (unsigned i = 0; i < w.threads; ++i) w.fibers[i].state = State::Ready;
        w.at_barrier = 0;
    }
    switch_to_scheduler(w);
}

uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width) {
    Worker& w = *running;
    unsigned lane = w.current & 31u;
    Warp& warp = w.warps[w.current >> 5];
    char text[160];
    if (!(mask >> lane & 1u)) {
        snprintf(text, sizeof text, "%s with mask 0x%08x that leaves out the calling lane %u", collective_name(op), mask, lane);
        fault_in_fiber(w, text);
    }
    if (width < 1 || width > 32 || (width & (width - 1))) {
        snprintf(text, sizeof text, "%s with width %d (a power of two up to 32)", collective_name(op), width);
        fault_in_fiber(w, text);
    }
    if (mask & ~warp.lanes) {
        snprintf(text, sizeof text, "%s with mask 0x%08x names lanes 0x%08x this block does not have", collective_name(op), mask,
                 mask & ~warp.lanes);
        fault_in_fiber(w, text);
    }
    if (mask & warp.exited) {
        snprintf(text, sizeof text, "%s with mask 0x%08x names lanes 0x%08x that have returned", collective_name(op), mask,
                 mask & warp.exited);
        fault_in_fiber(w, text);
    }
    Group* group = nullptr;
    for (Group& g : warp.groups) {
        if (!g.active) continue;
        if (g.mask == mask) {
            group = &g;
        } else if (g.mask & mask) {
            snprintf(text, sizeof text, "%s with mask 0x%08x overlaps %s with mask 0x%08x", collective_name(op), mask,
                     collective_name(g.op), g.mask);
            fault_in_fiber(w, text);
        }
    }
    if (group == nullptr) {
        for (Group& g : warp.groups) {
            if (!g.active) {
                group = &g;
                group->active = true;
                group->op = op;
                group->mask = mask;
                group->arrived = 0;
                group->width = width;
                break;
            }
        }
        if (group == nullptr) fault_in_fiber(w, "too many collectives pending in one warp");
    } else if (group->op != op || group->width != width) {
        snprintf(text, sizeof text, "lanes of mask 0x%08x reached different collectives: %s and %s", mask,
                 collective_name(group->op), collective_name(op));
        fault_in_fiber(w, text);
    }
    group->values[lane] = value;
    group->args[lane] = arg;
    group->arrived |= 1u << lane;
    unsigned base = w.current & ~31u;
    w.fibers[w.current].state = State::Waiting;
    if (group->arrived == mask) {
        uint64_t shared_result = is_shuffle(op) ? 0 : vote(*group);
        for (unsigned l = 0; l < 32; ++l) {
            if (!(mask >> l & 1u)) continue;
            uint64_t r = shared_result;
            if (is_shuffle(op)) {
                int src = source_lane(op, l, group->args[l], width);
                if (src >= 0 && (src > 31 || !(mask >> src & 1u))) {
                    snprintf(text, sizeof text, "%s: lane %u reads lane %d, which is not in mask 0x%08x", collective_name(op), l,
                             src, mask);
                    fault_in_fiber(w, text);
                }
                r = group->values[src < 0 ? l : static_cast<unsigned>(src)];
            }
            w.fibers[base + l].result = r;
            w.fibers[base + l].state = State::Ready;
        }
        group->active = false;
    }
    switch_to_scheduler(w);
    return w.fibers[w.current].result;
}

}  // namespace dsv4sim

using namespace dsv4sim;

extern "C" {

// Index of the kernel named `name`, or -1.
int dsv4_sim_function(const char* name) {
    const auto& kernels = registry();
    for (size_t i = 0; i < kernels.size(); ++i)
        if (kernels[i].first == name) return static_cast<int>(i);
    return -1;
}

size_t dsv4_sim_function_count() { return registry().size(); }

const char* dsv4_sim_function_name(size_t i) { return i < registry().size() ? registry()[i].first.c_str() : nullptr; }

// Runs kernel `function` over `grid` blocks of `block` threads with `shared_bytes` of dynamic
// shared memory; `order` 0 runs each block's fibers forward, 1 reversed, 2 in an order drawn
// from `seed`; at most `workers` OS threads. 0 on success; otherwise the first fault's message
// is written to `error`.
int dsv4_sim_launch(int function, const unsigned grid[3], const unsigned block[3], unsigned shared_bytes, void** params,
                    int order, uint64_t seed, unsigned workers, char* error, size_t error_len) {
    auto fail = [&](const std::string& message) {
        snprintf(error, error_len, "%s", message.c_str());
        return 1;
    };
    if (function < 0 || static_cast<size_t>(function) >= registry().size()) return fail("no such kernel");
    uint64_t threads = static_cast<uint64_t>(block[0]) * block[1] * block[2];
    if (threads == 0 || threads > kMaxThreads) return fail("block of " + std::to_string(threads) + " threads (1 to 1024)");
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535)
        return fail("grid dimensions out of range");
    if (shared_bytes > kMaxSharedBytes) return fail(std::to_string(shared_bytes) + " bytes of dynamic shared memory");
    uint64_t blocks = static_cast<uint64_t>(grid[0]) * grid[1] * grid[2];
    std::vector<uint64_t> permutation;
    if (order == 2) {
        permutation.resize(blocks);
        uint64_t rng = seed;
        for (uint64_t i = 0; i < blocks; ++i) permutation[i] = i;
        for (uint64_t i = blocks; i > 1; --i) std::swap(permutation[i - 1], permutation[splitmix(rng) % i]);
    }
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex message_lock;
    std::string message;
    Entry entry = registry()[static_cast<size_t>(function)].second;
    auto work = [&]() {
        std::unique_ptr<Worker> w = take_worker();
        running = w.get();
        w->entry = entry;
        w->params = params;
        w->shared.assign(shared_bytes, 0);
        blockDim = dim3(block[0], block[1], block[2]);
        gridDim = dim3(grid[0], grid[1], grid[2]);
        while (!failed.load(std::memory_order_relaxed)) {
            uint64_t k = next.fetch_add(1);
            if (k >= blocks) break;
            uint64_t b = order == 1 ? blocks - 1 - k : order == 2 ? permutation[k] : k;
            uint3 index{static_cast<unsigned>(b % grid[0]), static_cast<unsigned>((b / grid[0]) % grid[1]),
                        static_cast<unsigned>(b / (static_cast<uint64_t>(grid[0]) * grid[1]))};
            w->faulted = false;
            if (!run_block(*w, index, order, seed)) {
                std::lock_guard<std::mutex> guard(message_lock);
                if (!failed.exchange(true)) message = w->message;
            }
        }
        running = nullptr;
        return_worker(std::move(w));
    };
    unsigned helpers = static_cast<unsigned>(std::min<uint64_t>(workers == 0 ? 1 : workers, blocks)) - 1;
    std::vector<std::thread> pool;
    pool.reserve(helpers);
    for (unsigned i = 0; i < helpers; ++i) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    return failed ? fail(message) : 0;
}

// Device memory of the emulation: host memory from this library's allocator (so AddressSanitizer
// guards it when the library is built with it), aligned as cudaMalloc's.
void* dsv4_sim_malloc(size_t bytes) {
    void* p = nullptr;
    return posix_memalign(&p, 256, bytes == 0 ? 1 : bytes) == 0 ? p : nullptr;
}

void dsv4_sim_free(void* p) { free(p); }
}
