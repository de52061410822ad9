/* Direct depthwise convolution kernels for CPU: float32, stride 1, any kernel and dilation.
   Loaded by ops/dwconv/native.py, which compiles this file on first use.

   GCC vector extensions (16 floats: one AVX-512 register, or two AVX2 registers) keep one
   source for whatever -march=native offers. Each plane is first copied into a zero-bordered
   scratch plane (width a multiple of 16 plus the kernel's reach, height a multiple of the row
   block plus the kernel's reach), so inner loops have no bounds checks and no masks.

   Kernels are processed in bands of at most MAX_KH rows, and the band height KH is a
   compile-time constant (one instance per height 1..MAX_KH): the KH weights of one kernel
   column then live in registers, and every input vector loaded is used by up to
   min(KH, ROWS) multiply-adds. Unaligned 64-byte loads split across two cache lines, so a
   load per multiply-add would halve the throughput.

   Threads: OpenMP. PyTorch's wheel ships libgomp.so.1, and this library's libgomp.so.1
   dependency resolves to that already-loaded copy, so these are PyTorch's own threads. */

#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define VEC 16
#define ROWS 8
#define MAX_KH 15
typedef float vec __attribute__((vector_size(VEC * sizeof(float))));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* A load the compiler must keep in a register: without the barrier GCC folds it back into
   every multiply-add as a memory operand, i.e. one (split) load per multiply-add again. */
static inline vec load_once(const float *p) {
    vec v = load(p);
#ifdef __AVX512F__ /* one register; with narrower vectors GCC splits v and this cannot apply */
    __asm__("" : "+v"(v));
#endif
    return v;
}

static inline void store(float *p, vec v) { memcpy(p, &v, sizeof(v)); }

/* The first n (< VEC) floats: masked on AVX-512; elsewhere a short copy. (A memcpy call per
   row tail cost more than a 31-tap row itself on 56-wide maps.) */
#ifdef __AVX512F__
static inline vec load_part(const float *p, int n) {
    return (vec)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline void store_part(float *p, vec v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
}
#else
static inline vec load_part(const float *p, int n) {
    vec v = {0};
    for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
}
static inline void store_part(float *p, vec v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
}
#endif

/* Written out: GCC turns an element loop into 16 masked broadcasts. */
static inline vec splat(float s) { return (vec){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }

static inline float hsum(vec v) {
    float s = 0.0f;
    for (int i = 0; i < VEC; ++i) s += v[i];
    return s;
}

/* One call's geometry, filled field by field by ops/dwconv/native.py (its ctypes mirror,
   `Geometry`, checks sizeof against dwconv_geometry_size()): named fields, because a positional
   list of ints that drifts between Python and C corrupts memory without a word. */
typedef struct {
    int batch, channels, height, width; /* input (N, C, H, W) */
    int kernel_h, kernel_w;
    int top, left; /* output (0, 0) reads input (-top, -left); negative values crop */
    int dilation_h, dilation_w;
    int out_h, out_w;
    int threads;
} dwconv_geometry;

int dwconv_geometry_size(void) { return (int)sizeof(dwconv_geometry); }

static int round_up(int n, int m) { return (n + m - 1) / m * m; }

/* A thread's scratch; when it cannot be had, *failed is set and the thread skips its share. */
static float *thread_scratch(size_t floats, int *failed) {
    float *p = malloc(sizeof(float) * floats);
    if (!p) {
#pragma omp atomic write
        *failed = 1;
    }
    return p;
}

/* dst (drows x dcols) = src (rows x cols) shifted by (top, left), zero elsewhere. Plain loops
   (kept from becoming memset/memcpy calls): rows are short, and per-call overhead of the
   library routines cost more than the copy itself on 56-wide maps. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void place(
    const float *src, int rows, int cols, float *dst, int drows, int dcols, int top, int left) {
    const int c0 = left < 0 ? -left : 0;
    const int c1 = cols + left > dcols ? dcols - left : cols;
    for (int dr = 0; dr < drows; ++dr) {
        float *row = dst + (size_t)dr * dcols;
        const int r = dr - top;
        if (r < 0 || r >= rows || c1 <= c0) {
            for (int c = 0; c < dcols; ++c) row[c] = 0.0f;
            continue;
        }
        const float *from = src + (size_t)r * cols;
        for (int c = 0; c < c0 + left; ++c) row[c] = 0.0f;
        for (int c = c0; c < c1; ++c) row[c + left] = from[c];
        for (int c = c1 + left; c < dcols; ++c) row[c] = 0.0f;
    }
}

/* ROWS output rows (row stride ostride, wo valid columns) = (first band ? bias : themselves)
   + one band of KH kernel rows; xs points at the input row that the band's first kernel row
   meets for the block's first output row; scols is the stride between the input rows that
   successive kernel rows meet (dilation x scratch width) and dw the column dilation. The
   last, partial vector of a row is masked, so dst may be the output tensor itself. */
#define FORWARD_BLOCK(KH)                                                                   \
    static void forward_block_##KH(const float *xs, int scols, const float *wc, int kw,     \
                                   int dw, int first, float b, float *dst, int ostride,     \
                                   int wo) {                                                \
        for (int x0 = 0; x0 < wo; x0 += VEC) {                                              \
            const int cols = wo - x0 < VEC ? wo - x0 : VEC;                                 \
            vec acc[ROWS];                                                                  \
            for (int r = 0; r < ROWS; ++r) {                                                \
                if (first) {                                                                \
                    acc[r] = splat(b);                                                      \
                } else if (cols == VEC) {                                                   \
                    acc[r] = load(dst + (size_t)r * ostride + x0);                          \
                } else {                                                                    \
                    acc[r] = load_part(dst + (size_t)r * ostride + x0, cols);               \
                }                                                                           \
            }                                                                               \
            for (int j = 0; j < kw; ++j) {                                                  \
                vec wr[KH];                                                                 \
                _Pragma("GCC unroll 32") for (int i = 0; i < KH; ++i) wr[i] =               \
                    splat(wc[i * kw + j]);                                                  \
                const float *col = xs + x0 + j * dw;                                        \
                _Pragma("GCC unroll 64") for (int t = 0; t < ROWS + KH - 1; ++t) {          \
                    const vec v = load_once(col + (size_t)t * scols);                       \
                    _Pragma("GCC unroll 16") for (int r = 0; r < ROWS; ++r) {               \
                        const int i = t - r;                                                \
                        if (i >= 0 && i < KH) acc[r] += v * wr[i];                          \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            for (int r = 0; r < ROWS; ++r) {                                                \
                if (cols == VEC)                                                            \
                    store(dst + (size_t)r * ostride + x0, acc[r]);                          \
                else                                                                        \
                    store_part(dst + (size_t)r * ostride + x0, acc[r], cols);               \
            }                                                                               \
        }                                                                                   \
    }

/* One plane's contribution to dw[i][j] = sum_(y,x) xs[y + i][x + j * dw] * g[y][x], rows
   counted in strides (scols for xs, gstride for g: a dilation's residue class of rows).
   Rows stream by y: g[y] is loaded once and meets the KH input rows y..y+KH-1, which stay in
   a rolling register window (row r in slot r % KH; unrolling by KH makes slots constant). */
#define WEIGHT_GRAD_PLANE(KH)                                                               \
    static void weight_grad_plane_##KH(const float *xs, int scols, const float *gs,         \
                                       int gstride, int wvec, int ho, int kw, int dw,       \
                                       float *dwc) {                                        \
        const int full = ho - ho % KH;                                                      \
        for (int j = 0; j < kw; ++j) {                                                      \
            vec acc[KH];                                                                    \
            for (int i = 0; i < KH; ++i) acc[i] = splat(0.0f);                              \
            for (int x0 = 0; x0 < wvec; x0 += VEC) {                                        \
                const float *col = xs + x0 + j * dw;                                        \
                const float *gcol = gs + x0;                                                \
                vec win[KH];                                                                \
                _Pragma("GCC unroll 16") for (int i = 0; i < KH - 1; ++i) win[i] =          \
                    load_once(col + (size_t)i * scols);                                     \
                for (int y0 = 0; y0 < full; y0 += KH) {                                     \
                    _Pragma("GCC unroll 16") for (int u = 0; u < KH; ++u) {                 \
                        win[(u + KH - 1) % KH] =                                            \
                            load_once(col + (size_t)(y0 + u + KH - 1) * scols);             \
                        const vec g = load_once(gcol + (size_t)(y0 + u) * gstride);         \
                        _Pragma("GCC unroll 16") for (int i = 0; i < KH; ++i) acc[i] +=     \
                            win[(u + i) % KH] * g;                                          \
                    }                                                                       \
                }                                                                           \
                for (int y = full; y < ho; ++y) {                                           \
                    const vec g = load_once(gcol + (size_t)y * gstride);                    \
                    _Pragma("GCC unroll 16") for (int i = 0; i < KH; ++i) acc[i] +=         \
                        load(col + (size_t)(y + i) * scols) * g;                            \
                }                                                                           \
            }                                                                               \
            for (int i = 0; i < KH; ++i) dwc[i * kw + j] += hsum(acc[i]);                   \
        }                                                                                   \
    }

#define KERNELS(KH) FORWARD_BLOCK(KH) WEIGHT_GRAD_PLANE(KH)
KERNELS(1)
KERNELS(2)
KERNELS(3)
KERNELS(4)
KERNELS(5)
KERNELS(6)
KERNELS(7)
KERNELS(8)
KERNELS(9)
KERNELS(10)
KERNELS(11)
KERNELS(12)
KERNELS(13)
KERNELS(14)
KERNELS(15)

typedef void (*forward_fn)(const float *, int, const float *, int, int, int, float, float *,
                           int, int);
typedef void (*weight_grad_fn)(const float *, int, const float *, int, int, int, int, int,
                               float *);

static forward_fn forward_for(int kh) {
    switch (kh) {
    case 1: return forward_block_1;
    case 2: return forward_block_2;
    case 3: return forward_block_3;
    case 4: return forward_block_4;
    case 5: return forward_block_5;
    case 6: return forward_block_6;
    case 7: return forward_block_7;
    case 8: return forward_block_8;
    case 9: return forward_block_9;
    case 10: return forward_block_10;
    case 11: return forward_block_11;
    case 12: return forward_block_12;
    case 13: return forward_block_13;
    case 14: return forward_block_14;
    case 15: return forward_block_15;
    default: return NULL;
    }
}

static weight_grad_fn weight_grad_for(int kh) {
    switch (kh) {
    case 1: return weight_grad_plane_1;
    case 2: return weight_grad_plane_2;
    case 3: return weight_grad_plane_3;
    case 4: return weight_grad_plane_4;
    case 5: return weight_grad_plane_5;
    case 6: return weight_grad_plane_6;
    case 7: return weight_grad_plane_7;
    case 8: return weight_grad_plane_8;
    case 9: return weight_grad_plane_9;
    case 10: return weight_grad_plane_10;
    case 11: return weight_grad_plane_11;
    case 12: return weight_grad_plane_12;
    case 13: return weight_grad_plane_13;
    case 14: return weight_grad_plane_14;
    case 15: return weight_grad_plane_15;
    default: return NULL;
    }
}

static int band(int kh, int i0) { return kh - i0 < MAX_KH ? kh - i0 : MAX_KH; }

/* y[p, y, x] = bias[c] + sum_ij w[c, i, j] * x[p, y - top + i*dh, x - left + j*dw],
   c = p % C. x: planes (P, h, wd); y: (P, ho, wo). top/left may be negative (crop). With row
   dilation dh the output rows split into dh classes (y mod dh) that never share input rows;
   each class is a dilation-1 problem over every dh-th scratch row. */
int dwconv_forward_f32(const float *x, const float *w, const float *bias, float *y,
                       const dwconv_geometry *g) {
    const int planes = g->batch * g->channels, channels = g->channels, h = g->height,
              wd = g->width, kh = g->kernel_h, kw = g->kernel_w, top = g->top, left = g->left,
              dh = g->dilation_h, dw = g->dilation_w, ho = g->out_h, wo = g->out_w,
              threads = g->threads;
    if (kh < 1 || kw < 1 || dh < 1 || dw < 1) return -1;
    const int wvec = round_up(wo, VEC);
    const int per_class = (ho + dh - 1) / dh;
    const int srows = dh * (round_up(per_class, ROWS) + kh - 1);
    const int scols = wvec + (kw - 1) * dw;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *xs = thread_scratch((size_t)srows * scols + (size_t)ROWS * wvec, &failed);
        float *out = xs ? xs + (size_t)srows * scols : NULL;
#pragma omp for schedule(static)
        for (int p = 0; p < planes; ++p) {
            if (!xs) continue;
            const int c = p % channels;
            const float *wc = w + (size_t)c * kh * kw;
            const float b = bias ? bias[c] : 0.0f;
            place(x + (size_t)p * h * wd, h, wd, xs, srows, scols, top, left);
            float *yp = y + (size_t)p * ho * wo;
            for (int phase = 0; phase < dh && phase < ho; ++phase) {
                const int count = (ho - phase + dh - 1) / dh;
                for (int m0 = 0; m0 < count; m0 += ROWS) {
                    /* full blocks write the output directly; the last, short one via `out` */
                    const int rows = count - m0 < ROWS ? count - m0 : ROWS;
                    const int y0 = phase + dh * m0;
                    float *dst = rows == ROWS ? yp + (size_t)y0 * wo : out;
                    const int ostride = rows == ROWS ? dh * wo : wvec;
                    for (int i0 = 0; i0 < kh; i0 += MAX_KH)
                        forward_for(band(kh, i0))(xs + (size_t)(y0 + dh * i0) * scols,
                                                  dh * scols, wc + (size_t)i0 * kw, kw, dw,
                                                  i0 == 0, b, dst, ostride, wo);
                    if (dst == out)
                        for (int r = 0; r < rows; ++r)
                            memcpy(yp + (size_t)(y0 + dh * r) * wo, out + (size_t)r * wvec,
                                   sizeof(float) * wo);
                }
            }
        }
        free(xs);
    }
    return failed;
}

/* dw[c, 0, i, j] = sum_n sum_(y,x) x[n, c, y - top + i*dh, x - left + j*dw] * g[n, c, y, x].
   Each thread owns whole channels (loop over the batch inside): deterministic, no atomics. */
int dwconv_weight_grad_f32(const float *x, const float *g, float *dw_out,
                           const dwconv_geometry *geo) {
    const int batch = geo->batch, channels = geo->channels, h = geo->height, wd = geo->width,
              kh = geo->kernel_h, kw = geo->kernel_w, top = geo->top, left = geo->left,
              dh = geo->dilation_h, dw = geo->dilation_w, ho = geo->out_h, wo = geo->out_w,
              threads = geo->threads;
    if (kh < 1 || kw < 1 || dh < 1 || dw < 1) return -1;
    const int wvec = round_up(wo, VEC);
    const int srows = ho + (kh - 1) * dh;
    const int scols = wvec + (kw - 1) * dw;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *xs = thread_scratch((size_t)srows * scols + (size_t)ho * wvec, &failed);
        float *gs = xs ? xs + (size_t)srows * scols : NULL;
#pragma omp for schedule(static)
        for (int c = 0; c < channels; ++c) {
            if (!xs) continue;
            float *dwc = dw_out + (size_t)c * kh * kw;
            memset(dwc, 0, sizeof(float) * kh * kw);
            for (int n = 0; n < batch; ++n) {
                const size_t p = (size_t)n * channels + c;
                place(x + p * h * wd, h, wd, xs, srows, scols, top, left);
                place(g + p * ho * wo, ho, wo, gs, ho, wvec, 0, 0);
                for (int phase = 0; phase < dh && phase < ho; ++phase) {
                    const int count = (ho - phase + dh - 1) / dh;
                    for (int i0 = 0; i0 < kh; i0 += MAX_KH)
                        weight_grad_for(band(kh, i0))(
                            xs + (size_t)(phase + dh * i0) * scols, dh * scols,
                            gs + (size_t)phase * wvec, dh * wvec, wvec, count, kw, dw,
                            dwc + (size_t)i0 * kw);
                }
            }
        }
        free(xs);
    }
    return failed;
}

/* channels_last forward: x (N, H, W, C), w (C, 1, kh, kw), y (N, Ho, Wo, C); C a multiple of
   16. Vectors run over 16 channels, so every load is one aligned pixel and no scratch copy is
   needed: pixels outside the map are zero vectors instead. One task per output row. Per block
   of PIX output pixels and JB kernel columns, the PIX + JB - 1 input pixels are loaded once
   and each feeds up to JB multiply-adds (JB = 8 from 5 columns on; 1 below, where padding the
   kernel to 8 columns would waste more than the reuse saves). Measured at 2x64x56x56 against
   oneDNN's brdgmm_dw: 3x3 0.13 vs 0.17 ms, 13x13 0.80 vs 2.4, 31x31 2.9 vs 3.4, 1x31 0.16 vs
   0.23; kernels 1 or 2 wide are slower here (31x1: 0.44 vs 0.31) and stay on oneDNN. */
#define PIX 8
#define NHWC_ROW(JB)                                                                        \
    static void nhwc_row_##JB(const float *x, const float *wt, const float *bias, float *yrow,\
                              int n, int oy, int channels, int h, int wd, int kh, int kwp,   \
                              int top, int left, int wo) {                                   \
        for (int cb = 0; cb < channels; cb += VEC) {                                        \
            const vec b = bias ? load(bias + cb) : splat(0.0f);                             \
            for (int x0 = 0; x0 < wo; x0 += PIX) {                                          \
                vec acc[PIX];                                                               \
                for (int r = 0; r < PIX; ++r) acc[r] = b;                                   \
                for (int i = 0; i < kh; ++i) {                                              \
                    const int iy = oy - top + i;                                            \
                    if (iy < 0 || iy >= h) continue;                                        \
                    const float *xrow = x + ((size_t)n * h + iy) * wd * channels + cb;      \
                    const float *wrow = wt + (size_t)i * kwp * channels + cb;               \
                    for (int j0 = 0; j0 < kwp; j0 += JB) {                                  \
                        vec v[PIX + JB - 1];                                                \
                        _Pragma("GCC unroll 16") for (int t = 0; t < PIX + JB - 1; ++t) {   \
                            const int ix = x0 - left + j0 + t;                              \
                            v[t] = ix >= 0 && ix < wd ? load(xrow + (size_t)ix * channels)  \
                                                      : splat(0.0f);                        \
                        }                                                                   \
                        _Pragma("GCC unroll 8") for (int jj = 0; jj < JB; ++jj) {           \
                            const vec wv = load(wrow + (size_t)(j0 + jj) * channels);       \
                            _Pragma("GCC unroll 8") for (int r = 0; r < PIX; ++r) acc[r] += \
                                v[r + jj] * wv;                                             \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                const int pixels = wo - x0 < PIX ? wo - x0 : PIX;                           \
                for (int r = 0; r < pixels; ++r)                                            \
                    store(yrow + (size_t)(x0 + r) * channels + cb, acc[r]);                 \
            }                                                                               \
        }                                                                                   \
    }
NHWC_ROW(1)
NHWC_ROW(8)

int dwconv_forward_nhwc_f32(const float *x, const float *w, const float *bias, float *y,
                            const dwconv_geometry *g) {
    const int batch = g->batch, channels = g->channels, h = g->height, wd = g->width,
              kh = g->kernel_h, kw = g->kernel_w, top = g->top, left = g->left, ho = g->out_h,
              wo = g->out_w, threads = g->threads;
    if (channels % VEC || kh < 1 || kw < 1 || g->dilation_h != 1 || g->dilation_w != 1)
        return -1;
    const int jb = kw >= 5 ? 8 : 1;
    const int kwp = round_up(kw, jb);
    /* weights as (kh, kwp, C), zero past kw: one aligned vector per tap and channel block */
    float *wt = aligned_alloc(64, sizeof(float) * round_up(kh * kwp * channels, VEC));
    if (!wt) return 1;
    for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kwp; ++j)
            for (int c = 0; c < channels; ++c)
                wt[((size_t)i * kwp + j) * channels + c] =
                    j < kw ? w[((size_t)c * kh + i) * kw + j] : 0.0f;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int task = 0; task < batch * ho; ++task) {
        const int n = task / ho, oy = task % ho;
        float *yrow = y + ((size_t)n * ho + oy) * wo * channels;
        if (jb == 8)
            nhwc_row_8(x, wt, bias, yrow, n, oy, channels, h, wd, kh, kwp, top, left, wo);
        else
            nhwc_row_1(x, wt, bias, yrow, n, oy, channels, h, wd, kh, kwp, top, left, wo);
    }
    free(wt);
    return 0;
}

/* channels_last weight-gradient: x (N, H, W, C), g (N, Ho, Wo, C), dw (C, 1, kh, kw); C a
   multiple of 16; any dilation. One task per (16 channels, kernel row): each writes its own
   dW entries, so the result is deterministic without atomics. Per output pixel, its dY vector
   is loaded once and meets JB kernel columns; input pixels outside the map count as zero. */
int dwconv_weight_grad_nhwc_f32(const float *x, const float *g, float *dw_out,
                                const dwconv_geometry *geo) {
    const int batch = geo->batch, channels = geo->channels, h = geo->height, wd = geo->width,
              kh = geo->kernel_h, kw = geo->kernel_w, top = geo->top, left = geo->left,
              dh = geo->dilation_h, dw = geo->dilation_w, ho = geo->out_h, wo = geo->out_w,
              threads = geo->threads;
    if (channels % VEC || kh < 1 || kw < 1 || dh < 1 || dw < 1) return -1;
    const int blocks = channels / VEC;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int task = 0; task < blocks * kh; ++task) {
        const int cb = task / kh * VEC, i = task % kh;
        for (int j0 = 0; j0 < kw; j0 += PIX) {
            const int taps = kw - j0 < PIX ? kw - j0 : PIX;
            vec acc[PIX];
            for (int t = 0; t < PIX; ++t) acc[t] = splat(0.0f);
            for (int n = 0; n < batch; ++n) {
                for (int oy = 0; oy < ho; ++oy) {
                    const int iy = oy - top + i * dh;
                    if (iy < 0 || iy >= h) continue;
                    const float *xrow = x + ((size_t)n * h + iy) * wd * channels + cb;
                    const float *grow = g + ((size_t)n * ho + oy) * wo * channels + cb;
                    /* ox where every tap j0..j0+PIX-1 lands inside the row: no checks */
                    int lo = left - j0 * dw, hi = wd + left - (j0 + PIX - 1) * dw;
                    lo = lo < 0 ? 0 : lo > wo ? wo : lo;
                    hi = hi < lo ? lo : hi > wo ? wo : hi;
                    for (int ox = 0; ox < wo; ++ox) {
                        const vec gv = load(grow + (size_t)ox * channels);
                        const int ix0 = ox - left + j0 * dw;
                        if (ox >= lo && ox < hi) {
                            _Pragma("GCC unroll 8") for (int t = 0; t < PIX; ++t) acc[t] +=
                                load(xrow + (size_t)(ix0 + t * dw) * channels) * gv;
                        } else {
                            for (int t = 0; t < taps; ++t) {
                                const int ix = ix0 + t * dw;
                                if (ix >= 0 && ix < wd)
                                    acc[t] += load(xrow + (size_t)ix * channels) * gv;
                            }
                        }
                    }
                }
            }
            for (int t = 0; t < taps; ++t)
                for (int lane = 0; lane < VEC; ++lane)
                    dw_out[((size_t)(cb + lane) * kh + i) * kw + j0 + t] = acc[t][lane];
        }
    }
    return 0;
}
