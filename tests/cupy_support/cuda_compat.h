// Lets the kernel sources compile as host C++ for the CPU tests: CUDA qualifiers become
// nothing, the built-in thread indices are globals that the harness sets, and shared memory is
// a static array (filled with NaN before each block, so a read of a slot nobody wrote shows).
//
// A block of several threads runs them as coroutines (ucontext) on one OS thread, one at a
// time, each until it reaches __syncthreads or returns; a barrier phase ends when every
// thread has had its turn. The order within a phase is either ascending or descending thread
// id, so a read of another thread's shared slot without a barrier in between sees a different
// value in one of the two orders (the tests run both and compare). A thread that returns while
// others wait at a barrier (a deadlock or undefined behaviour on a GPU) is counted as an error.
#pragma once
#include <math.h>
#include <ucontext.h>

#include <cstring>
#include <functional>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)

struct float4 {
    float x, y, z, w;
};

struct psn_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
inline psn_dim3 threadIdx{0, 0, 0}, blockIdx{0, 0, 0}, blockDim{1, 1, 1}, gridDim{1, 1, 1};

inline float psn_emu_smem[1 << 16];
#define PSN_SHARED_FLOATS(name) float* name = psn_emu_smem

// ---------------------------------------------------------------- block scheduler
struct psn_emu_block_state {
    enum { READY = 0, AT_BARRIER = 1, EXITED = 2 };
    std::vector<ucontext_t> ctx;
    std::vector<std::vector<char>> stacks;
    std::vector<int> state;
    ucontext_t scheduler;
    int current = -1;  // running thread, -1 outside run_block
    bool descending = false;
    long long errors = 0;
    const std::function<void()>* body = nullptr;
};
inline psn_emu_block_state psn_emu;

inline void __syncthreads() {
    if (psn_emu.current < 0) return;  // a block of one thread
    int me = psn_emu.current;
    psn_emu.state[me] = psn_emu_block_state::AT_BARRIER;
    swapcontext(&psn_emu.ctx[me], &psn_emu.scheduler);
}

inline void psn_emu_entry() {
    (*psn_emu.body)();
    psn_emu.state[psn_emu.current] = psn_emu_block_state::EXITED;
}  // returns to the scheduler through uc_link

// Runs body as every thread (threadIdx set) of a block of blockDim threads.
inline void psn_emu_run_block(const std::function<void()>& body) {
    int nx = (int)blockDim.x, n = (int)(blockDim.x * blockDim.y);
    std::fill(psn_emu_smem, psn_emu_smem + (1 << 16), NAN);
    if (n == 1) {
        threadIdx = psn_dim3{0, 0, 0};
        body();
        return;
    }
    const size_t stack_bytes = 1 << 16;
    psn_emu.ctx.resize(n);
    psn_emu.state.assign(n, psn_emu_block_state::READY);
    if ((int)psn_emu.stacks.size() < n) psn_emu.stacks.resize(n);
    psn_emu.body = &body;
    for (int i = 0; i < n; ++i) {
        psn_emu.stacks[i].resize(stack_bytes);
        getcontext(&psn_emu.ctx[i]);
        psn_emu.ctx[i].uc_stack.ss_sp = psn_emu.stacks[i].data();
        psn_emu.ctx[i].uc_stack.ss_size = stack_bytes;
        psn_emu.ctx[i].uc_link = &psn_emu.scheduler;
        makecontext(&psn_emu.ctx[i], psn_emu_entry, 0);
    }
    for (;;) {
        for (int p = 0; p < n; ++p) {
            int i = psn_emu.descending ? n - 1 - p : p;
            if (psn_emu.state[i] != psn_emu_block_state::READY) continue;
            threadIdx = psn_dim3{(unsigned int)(i % nx), (unsigned int)(i / nx), 0};
            psn_emu.current = i;
            swapcontext(&psn_emu.scheduler, &psn_emu.ctx[i]);
            psn_emu.current = -1;
        }
        int waiting = 0, exited = 0;
        for (int s : psn_emu.state) {
            waiting += s == psn_emu_block_state::AT_BARRIER;
            exited += s == psn_emu_block_state::EXITED;
        }
        if (waiting == 0) break;
        if (exited > 0) ++psn_emu.errors;  // a barrier that not every thread reaches
        for (int& s : psn_emu.state)
            if (s == psn_emu_block_state::AT_BARRIER) s = psn_emu_block_state::READY;
    }
    threadIdx = psn_dim3{0, 0, 0};
}

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned int)v); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }  // one rounding
// The GPU's __fdividef is within 2 ulp of the quotient; the CPU tests use the exact quotient
// (what they compare is checked to a tolerance).
inline float __fdividef(float a, float b) { return a / b; }
inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
