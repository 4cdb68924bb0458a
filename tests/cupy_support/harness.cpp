// CPU entry points over the kernel sources (compiled with cuda_compat.h): every conv kernel runs
// over its whole grid with the block shape it is given (one thread per block makes each block's
// partial sums one column's; real launch shapes run every thread of a block, see cuda_compat.h);
// the dense kernels run one thread per block; plus the scalar device functions.
#include "cuda_compat.h"

#include "causal_conv.cu"
#include "dense.cu"

namespace {

void set_launch(unsigned int gx, unsigned int gy, unsigned int bx, unsigned int by) {
    gridDim = psn_dim3{gx, gy, 1};
    blockDim = psn_dim3{bx, by, 1};
    threadIdx = psn_dim3{0, 0, 0};
}

// Every block of the current grid, one after the other, each with all its threads.
void run_grid(const std::function<void()>& body) {
    for (unsigned int y = 0; y < gridDim.y; ++y)
        for (unsigned int x = 0; x < gridDim.x; ++x) {
            blockIdx = psn_dim3{x, y, 0};
            psn_emu_run_block(body);
        }
}

unsigned int cdiv(long long a, long long b) { return (unsigned int)((a + b - 1) / b); }

template <typename scalar_t, typename index_t>
void conv_fwd(const void* x, const void* hist, void* out, const float* w, const int* code,
              const float* bias, int n_t, int B, int C, int S, int k, int d, int w_stride,
              int b_stride, int block) {
    index_t N = (index_t)B * C * S;
    set_launch(cdiv(N, block), 1, (unsigned int)block, 1);
    run_grid([&] {
        psn_conv_fire_fwd<scalar_t, index_t>((const scalar_t*)x, (const scalar_t*)hist,
                                             (scalar_t*)out, w, code, bias, n_t, C, (index_t)S,
                                             N, k, d, w_stride, b_stride);
    });
}

template <typename scalar_t, int SG, int MODE, typename index_t>
void conv_bwd(const void* grad_s, const void* x, const void* hist, void* grad_x, const float* w,
              const int* code, const float* c0, const float* c1, const float* c2, int sg,
              float p0, float p1, float p2, float* gwb, float* partial, float* scratch, int n_t,
              int B, int C, int S, int k, int d, int w_stride, int b_stride, int tx, int ty) {
    index_t R = (index_t)B * S;
    set_launch(cdiv(R, ty), cdiv(C, tx), (unsigned int)tx, (unsigned int)ty);
    run_grid([&] {
        psn_conv_bwd<scalar_t, SG, MODE, index_t>(
            (const scalar_t*)grad_s, (const scalar_t*)x, (const scalar_t*)hist,
            (scalar_t*)grad_x, w, code, c0, c1, c2, sg, p0, p1, p2, gwb, partial, scratch, n_t,
            C, (index_t)S, R, k, d, w_stride, b_stride);
    });
}

template <typename scalar_t, typename index_t>
void conv_stats(const void* x, const void* hist, const float* w, float* partial, int n_t, int B,
                int C, int S, int k, int d, int w_stride, int tx, int ty) {
    index_t R = (index_t)B * S;
    set_launch(cdiv(R, ty), cdiv(C, tx), (unsigned int)tx, (unsigned int)ty);
    run_grid([&] {
        psn_conv_stats_fwd<scalar_t, index_t>((const scalar_t*)x, (const scalar_t*)hist, w,
                                              partial, n_t, C, (index_t)S, R, k, d, w_stride);
    });
}

template <typename scalar_t, typename index_t>
void dense_fwd(const void* x, void* out, const float* w, const float* bias, int t_in, int t_out,
               long long M) {
    set_launch((unsigned int)M, 1, 1, 1);
    for (index_t m = 0; m < (index_t)M; ++m) {
        blockIdx = psn_dim3{(unsigned int)m, 0, 0};
        psn_dense_fire_fwd<scalar_t, index_t>((const scalar_t*)x, (scalar_t*)out, w, bias, t_in,
                                              t_out, (index_t)M);
    }
}

template <typename scalar_t, int SG, typename index_t>
void dense_bwd(const void* grad_s, const void* x, const float* w, const float* bias, int sg,
               float p0, float p1, float p2, float* g, void* grad_x, int t_in, int t_out,
               long long M) {
    set_launch((unsigned int)M, 1, 1, 1);
    for (index_t m = 0; m < (index_t)M; ++m) {
        blockIdx = psn_dim3{(unsigned int)m, 0, 0};
        psn_dense_fire_bwd<scalar_t, SG, index_t>((const scalar_t*)grad_s, (const scalar_t*)x, w,
                                                  bias, sg, p0, p1, p2, g, (scalar_t*)grad_x,
                                                  t_in, t_out, (index_t)M);
    }
}

// Runs f<scalar, index> for dtype 0 = fp32, 1 = fp16, 2 = bf16 and wide = 0/1 (int/long long).
#define PSN_DISPATCH(dtype, wide, CALL)                         \
    do {                                                        \
        if ((dtype) == 0 && !(wide)) CALL(float, int);          \
        if ((dtype) == 0 && (wide)) CALL(float, long long);     \
        if ((dtype) == 1 && !(wide)) CALL(psn_half, int);       \
        if ((dtype) == 1 && (wide)) CALL(psn_half, long long);  \
        if ((dtype) == 2 && !(wide)) CALL(psn_bf16, int);       \
        if ((dtype) == 2 && (wide)) CALL(psn_bf16, long long);  \
    } while (0)

}  // namespace

extern "C" {

// Order in which the threads of a block take their turns between barriers (0 ascending, 1
// descending), and the number of barriers some thread of a block never reached.
void emu_set_descending(int descending) { psn_emu.descending = descending != 0; }
long long emu_barrier_errors() { return psn_emu.errors; }

float emu_ldexp(float x, int e) { return psn_ldexp(x, e); }
float emu_apply_tap(float x, int code) { return psn_apply_tap(x, code); }

void emu_to_half(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_float_to_half(in[i]);
}
void emu_from_half(const unsigned short* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_half_to_float(in[i]);
}
void emu_to_bf16(const float* in, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_float_to_bf16(in[i]);
}
void emu_from_bf16(const unsigned short* in, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = psn_bf16_to_float(in[i]);
}

// Surrogate derivative through the kernels' own template choice: specialised or run-time id.
void emu_surrogate(int sg, const float* x, float* out, long long n, float p0, float p1,
                   float p2) {
    for (long long i = 0; i < n; ++i) {
        if (sg == PSN_SG_ATAN)
            out[i] = psn_surrogate_grad<PSN_SG_ATAN>(x[i], sg, p0, p1, p2);
        else if (sg == PSN_SG_SIGMOID)
            out[i] = psn_surrogate_grad<PSN_SG_SIGMOID>(x[i], sg, p0, p1, p2);
        else
            out[i] = psn_surrogate_grad<PSN_SG_RUNTIME>(x[i], sg, p0, p1, p2);
    }
}

void emu_conv_fwd(int dtype, int wide, const void* x, const void* hist, void* out, const float* w,
                  const int* code, const float* bias, int n_t, int B, int C, int S, int k, int d,
                  int w_stride, int b_stride, int block) {
#define PSN_CALL(S_, I_) \
    conv_fwd<S_, I_>(x, hist, out, w, code, bias, n_t, B, C, S, k, d, w_stride, b_stride, block)
    PSN_DISPATCH(dtype, wide, PSN_CALL);
#undef PSN_CALL
}

void emu_conv_bwd(int dtype, int wide, int mode, const void* grad_s, const void* x,
                  const void* hist, void* grad_x, const float* w, const int* code, const float* c0,
                  const float* c1, const float* c2, int sg, float p0, float p1, float p2,
                  float* gwb, float* partial, float* scratch, int n_t, int B, int C, int S, int k,
                  int d, int w_stride, int b_stride, int tx, int ty) {
#define PSN_ARGS                                                                             \
    grad_s, x, hist, grad_x, w, code, c0, c1, c2, sg, p0, p1, p2, gwb, partial, scratch, n_t, \
        B, C, S, k, d, w_stride, b_stride, tx, ty
#define PSN_CALL(S_, I_)                                                        \
    do {                                                                        \
        if (mode == PSN_MODE_STATS)                                             \
            conv_bwd<S_, PSN_SG_RUNTIME, PSN_MODE_STATS, I_>(PSN_ARGS);         \
        else if (sg == PSN_SG_ATAN)                                             \
            conv_bwd<S_, PSN_SG_ATAN, PSN_MODE_FIRE, I_>(PSN_ARGS);             \
        else if (sg == PSN_SG_SIGMOID)                                          \
            conv_bwd<S_, PSN_SG_SIGMOID, PSN_MODE_FIRE, I_>(PSN_ARGS);          \
        else                                                                    \
            conv_bwd<S_, PSN_SG_RUNTIME, PSN_MODE_FIRE, I_>(PSN_ARGS);          \
    } while (0)
    PSN_DISPATCH(dtype, wide, PSN_CALL);
#undef PSN_CALL
#undef PSN_ARGS
}

void emu_conv_stats(int dtype, int wide, const void* x, const void* hist, const float* w,
                    float* partial, int n_t, int B, int C, int S, int k, int d, int w_stride,
                    int tx, int ty) {
#define PSN_CALL(S_, I_) \
    conv_stats<S_, I_>(x, hist, w, partial, n_t, B, C, S, k, d, w_stride, tx, ty)
    PSN_DISPATCH(dtype, wide, PSN_CALL);
#undef PSN_CALL
}

void emu_dense_fwd(int dtype, int wide, const void* x, void* out, const float* w,
                   const float* bias, int t_in, int t_out, long long M) {
#define PSN_CALL(S_, I_) dense_fwd<S_, I_>(x, out, w, bias, t_in, t_out, M)
    PSN_DISPATCH(dtype, wide, PSN_CALL);
#undef PSN_CALL
}

void emu_dense_bwd(int dtype, int wide, const void* grad_s, const void* x, const float* w,
                   const float* bias, int sg, float p0, float p1, float p2, float* g, void* grad_x,
                   int t_in, int t_out, long long M) {
#define PSN_ARGS grad_s, x, w, bias, sg, p0, p1, p2, g, grad_x, t_in, t_out, M
#define PSN_CALL(S_, I_)                                       \
    do {                                                       \
        if (sg == PSN_SG_ATAN)                                 \
            dense_bwd<S_, PSN_SG_ATAN, I_>(PSN_ARGS);          \
        else if (sg == PSN_SG_SIGMOID)                         \
            dense_bwd<S_, PSN_SG_SIGMOID, I_>(PSN_ARGS);       \
        else                                                   \
            dense_bwd<S_, PSN_SG_RUNTIME, I_>(PSN_ARGS);       \
    } while (0)
    PSN_DISPATCH(dtype, wide, PSN_CALL);
#undef PSN_CALL
#undef PSN_ARGS
}
}
