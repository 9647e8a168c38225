// Compiles fastconv's CUDA kernels as plain C++ for the host, to run them on machines without a
// GPU (tests/cuda/test_host_emulation.py).
//
// A launch runs the whole grid, one block after another. The threads of a block are fibers
// (ucontext) on one OS thread: each runs until it reaches __syncthreads() or returns, then the
// next one runs; when every thread of the block has reached the barrier, all go on. So
// shared-memory tiles, block-strided loads and tree reductions run as on the GPU, with the
// real block size, and what the threads of a block see of each other's writes is only what a
// barrier makes visible. (A fiber switch saves and restores the callee-saved registers and the
// stack pointer, x86-64 System V; glibc's swapcontext would also make two system calls per
// switch, which made the emulation ten times slower.) Two things a GPU never does, the emulation reports as errors:
//   - a barrier reached by some threads of a block while others have returned (a barrier in
//     divergent code, undefined behaviour in CUDA);
//   - a write to shared memory read by another thread in the same phase (a missing barrier):
//     not detected directly, but the threads of a block run in ascending order in even phases
//     and in descending order in odd ones (and the other way round in odd blocks), so a kernel
//     that depends on the order gives a wrong answer.
// What it cannot check: warp-level behaviour and the GPU's own numerics.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time: a static is that block's shared memory
#define __restrict__

struct fc_dim3 { unsigned int x, y, z; };
inline fc_dim3 threadIdx, blockIdx, blockDim, gridDim;

#if !defined(__x86_64__)
#error "the host emulation's fiber switch is written for x86-64"
#endif

// fc_switch(&save, to): pushes the callee-saved registers, stores the stack pointer in save,
// loads to, pops that stack's registers and returns to where it was switched out (or, for a new
// fiber, into fiber_entry).
extern "C" void fc_switch(void** save, void* to);
asm(R"(
    .text
    .globl fc_switch
    .type fc_switch, @function
fc_switch:
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
    .size fc_switch, .-fc_switch
)");

namespace fc_host {
constexpr std::size_t STACK_BYTES = 128 * 1024;
enum State { RUNNING, AT_BARRIER, DONE };
inline void* scheduler;           // the stack pointer of the launch, while a fiber runs
inline std::vector<void*> fibers;  // each fiber's saved stack pointer
inline std::vector<std::unique_ptr<char[]>> stacks;
inline std::vector<State> states;
inline unsigned current = 0;
inline std::function<void()> body;  // the launch being run, with its arguments bound
inline int error = 0;              // 1: a barrier in divergent code
inline unsigned pretend_grid_x = 0;  // nonzero: the gridDim.x a 1-D launch's kernels see

[[noreturn]] inline void fiber_entry() {
    body();
    states[current] = DONE;
    void* finished;
    fc_switch(&finished, scheduler);  // never switched back to
    __builtin_unreachable();
}

// A new fiber's stack: six zero registers under the address of fiber_entry, so that the first
// switch to it "returns" into fiber_entry with the stack aligned as after a call.
inline void* new_fiber(char* stack) {
    auto top = reinterpret_cast<std::uintptr_t>(stack + STACK_BYTES) & ~std::uintptr_t(15);
    auto* sp = reinterpret_cast<void**>(top) - 8;
    std::fill(sp, sp + 8, nullptr);
    sp[6] = reinterpret_cast<void*>(&fiber_entry);
    return sp;
}

inline fc_dim3 unflatten(unsigned long long i, fc_dim3 d) {
    return {unsigned(i % d.x), unsigned(i / d.x % d.y), unsigned(i / d.x / d.y)};
}

// Runs body() for every thread of every block of the launch (grid, block). With pretend_grid_x
// set, a 1-D launch's kernels see a grid that many blocks wide while only the real blocks run:
// a grid-stride loop then takes the stride of a huge launch on a small input (whose real grid
// covers every item in the first step).
inline void run(fc_dim3 grid, fc_dim3 block) {
    gridDim = grid;
    if (pretend_grid_x && grid.y == 1 && grid.z == 1) gridDim.x = std::max(grid.x, pretend_grid_x);
    blockDim = block;
    const unsigned threads = block.x * block.y * block.z;
    fibers.resize(threads);
    states.resize(threads);
    while (stacks.size() < threads) stacks.emplace_back(new char[STACK_BYTES]);
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    for (unsigned long long b = 0; b < blocks && !error; ++b) {
        blockIdx = unflatten(b, grid);
        for (unsigned t = 0; t < threads; ++t) {
            fibers[t] = new_fiber(stacks[t].get());
            states[t] = RUNNING;
        }
        for (unsigned phase = 0;; ++phase) {
            const bool descending = (phase + b) % 2 == 1;
            for (unsigned k = 0; k < threads; ++k) {
                current = descending ? threads - 1 - k : k;
                threadIdx = unflatten(current, block);
                fc_switch(&scheduler, fibers[current]);
            }
            const auto done = std::count(states.begin(), states.begin() + threads, DONE);
            if (done == threads) break;
            if (done != 0) { error = 1; break; }  // some returned, some wait at a barrier
            std::fill(states.begin(), states.begin() + threads, RUNNING);
        }
    }
}

template <typename... A, std::size_t... K>
void call(void (*kernel)(A...), void** args, std::index_sequence<K...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[K])...);
}

template <typename... A>
void launch_kernel(void (*kernel)(A...), const unsigned* dims, void** args) {
    body = [kernel, args] { call(kernel, args, std::index_sequence_for<A...>{}); };
    run({dims[0], dims[1], dims[2]}, {dims[3], dims[4], dims[5]});
}

// The launcher of one kernel: dims = grid x, y, z, block x, y, z; args[k] points to argument k.
template <auto KERNEL>
void launch(const unsigned* dims, void** args) { launch_kernel(KERNEL, dims, args); }
}  // namespace fc_host

// 1 (and cleared) if the last launches reached a barrier in divergent code, else 0.
extern "C" int fc_host_error() { return std::exchange(fc_host::error, 0); }
// The gridDim.x that 1-D launches pretend to have from now on (0: their own).
extern "C" void fc_host_pretend_grid_x(unsigned x) { fc_host::pretend_grid_x = x; }

inline void __syncthreads() {
    fc_host::states[fc_host::current] = fc_host::AT_BARRIER;
    fc_switch(&fc_host::fibers[fc_host::current], fc_host::scheduler);
}
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
using std::isnan;
using std::max;
using std::min;
