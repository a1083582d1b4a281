/* Fused ReLU + local response normalisation across channels, for the CPU.
 *
 * y_c = a_c * (k + alpha * sum_{j=c-h}^{c+h} a_j^2)^(-beta),  a = relu(x) or x,  h = size / 2,
 * channels outside [0, C) contribute nothing. alpha arrives already scaled (the paper's raw-sum
 * convention or Caffe's alpha / size): the Python side decides, this file only computes.
 *
 * One pass over the input and one over the output, instead of the eight or so full-tensor passes
 * of an eager torch implementation: conv1's 96x55x55 LRN is memory-bound, so passes are the cost.
 * Work units (pixels, or NCHW tiles) are shared among OpenMP threads. Built with -fopenmp this
 * library binds to the libgomp.so.1 torch already loaded, so it uses torch's own thread pool:
 * a second pool would fight oneDNN's spinning workers for the cores. Plain C with no torch or
 * Python headers, so it compiles in about a second.
 */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define MIN_PARALLEL_UNITS 64 /* fewer units than this: not worth waking threads */
#define TILE 256 /* spatial positions per NCHW work unit: (C + 2h) * TILE floats stay in L2 */

static inline float load_f32(float v) { return v; }
static inline float store_f32(float v) { return v; }

static inline float load_bf16(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t store_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float load_f16(_Float16 v) { return (float)v; }
static inline _Float16 store_f16(float f) { return (_Float16)f; }

#if defined(__AVX512F__)
/* 1/sqrt(t) from the 14-bit estimate and one Newton step (about 23 bits, like 1/sqrtf). */
static inline __m512 rsqrt_nr(__m512 t) {
    __m512 r = _mm512_rsqrt14_ps(t);
    __m512 half_t_r = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), t), r);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(half_t_r, r, _mm512_set1_ps(1.5f)));
}
#endif

/* scale[i] <- (k + alpha * s[i])^(-beta). The paper's beta = 0.75 is r^2 * rsqrt(r) with
 * r = rsqrt(t): square roots and divisions are slow on every x86 core; estimates are not. */
static void lrn_scale(float *s, int64_t n, float alpha, float beta, float k) {
    if (beta == 0.75f) {
        int64_t i = 0;
#if defined(__AVX512F__)
        __m512 va = _mm512_set1_ps(alpha), vk = _mm512_set1_ps(k);
        for (; i + 16 <= n; i += 16) {
            __m512 r = rsqrt_nr(_mm512_fmadd_ps(va, _mm512_loadu_ps(s + i), vk));
            _mm512_storeu_ps(s + i, _mm512_mul_ps(_mm512_mul_ps(r, r), rsqrt_nr(r)));
        }
#endif
        for (; i < n; i++) {
            float r = 1.0f / sqrtf(k + alpha * s[i]);
            s[i] = r * sqrtf(r);
        }
    } else if (beta == 0.5f) {
        for (int64_t i = 0; i < n; i++) s[i] = 1.0f / sqrtf(k + alpha * s[i]);
    } else {
        for (int64_t i = 0; i < n; i++) s[i] = powf(k + alpha * s[i], -beta);
    }
}

/* Normalise `pixels` consecutive channels-last pixels of C channels into floats:
 * out = LRN(relu?(x)) when size > 0, else relu?(x). work holds 2 * C + 2 * h floats. */
#define DEFINE_PIXELS(SUFFIX, T)                                                                 \
    static void pixels_##SUFFIX(const T *x, float *out, int64_t pixels, int64_t C, int64_t size, \
                                float alpha, float beta, float k, int relu, float *work) {      \
        int64_t h = size / 2;                                                                   \
        float *sq = work, *s = work + C + 2 * h;                                                \
        for (int64_t i = 0; i < h; i++) sq[i] = sq[C + h + i] = 0.0f;                           \
        for (int64_t p = 0; p < pixels; p++) {                                                  \
            const T *xr = x + p * C;                                                            \
            float *a = out + p * C;                                                             \
            for (int64_t c = 0; c < C; c++) {                                                   \
                float v = load_##SUFFIX(xr[c]);                                                 \
                if (relu) v = v > 0.0f ? v : 0.0f;                                              \
                a[c] = v;                                                                       \
                sq[h + c] = v * v;                                                              \
            }                                                                                   \
            if (size <= 0) continue;                                                            \
            for (int64_t c = 0; c < C; c++) s[c] = sq[c];                                       \
            for (int64_t j = 1; j < size; j++)                                                  \
                for (int64_t c = 0; c < C; c++) s[c] += sq[c + j];                              \
            lrn_scale(s, C, alpha, beta, k);                                                    \
            for (int64_t c = 0; c < C; c++) a[c] *= s[c];                                       \
        }                                                                                       \
    }

/* Channels-last LRN: unit = one pixel, its C channels contiguous. */
#define DEFINE_NHWC(SUFFIX, T)                                                                   \
    int lrn_nhwc_##SUFFIX(const T *x, T *y, int64_t u0, int64_t u1, int64_t C, int64_t size,    \
                          float alpha, float beta, float k, int relu) {                         \
        int failed = 0;                                                                         \
        _Pragma("omp parallel if (u1 - u0 >= MIN_PARALLEL_UNITS)") {                            \
        float *buf = (float *)malloc(sizeof(float) * (3 * C + 2 * (size / 2)));                 \
        if (!buf) _Pragma("omp atomic write") failed = 1;                                      \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t r = u0; r < u1; r++) {                                                     \
            if (!buf) continue;                                                                 \
            pixels_##SUFFIX(x + r * C, buf, 1, C, size, alpha, beta, k, relu, buf + C);         \
            for (int64_t c = 0; c < C; c++) y[r * C + c] = store_##SUFFIX(buf[c]);              \
        }                                                                                       \
        free(buf);                                                                              \
        }                                                                                       \
        return failed;                                                                          \
    }

/* Channels-last [ReLU ->] [LRN ->] 3x3 stride-2 max pooling in one pass: y is (N, OH, OW, C),
 * OH/OW as the caller's rounding (Caffe's ceil or torch's floor) gives; windows are clipped to
 * the input. Unit = one output row; each thread keeps its last three normalised input rows, so
 * the row two neighbouring output rows share is normalised once. */
#define DEFINE_POOL(SUFFIX, T)                                                                   \
    int lrn_pool_nhwc_##SUFFIX(const T *x, T *y, int64_t N, int64_t H, int64_t W, int64_t C,    \
                               int64_t OH, int64_t OW, int64_t size, float alpha, float beta,   \
                               float k, int relu) {                                             \
        int failed = 0;                                                                         \
        _Pragma("omp parallel if (N * OH >= 4)") {                                              \
        int64_t work = 2 * C + 2 * (size / 2) + 1;                                              \
        float *buf = (float *)malloc(sizeof(float) * (3 * W * C + work));                       \
        int64_t tag[3] = {-1, -1, -1};                                                          \
        if (!buf) _Pragma("omp atomic write") failed = 1;                                      \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t u = 0; u < N * OH; u++) {                                                  \
            if (!buf) continue;                                                                 \
            int64_t n = u / OH, oy = u % OH;                                                    \
            int64_t r0 = 2 * oy, r1 = r0 + 3 < H ? r0 + 3 : H;                                  \
            float *rows[3];                                                                     \
            for (int64_t r = r0; r < r1; r++) {                                                 \
                int64_t id = n * H + r, slot = r % 3;                                           \
                rows[r - r0] = buf + slot * W * C;                                              \
                if (tag[slot] != id) {                                                          \
                    pixels_##SUFFIX(x + id * W * C, rows[r - r0], W, C, size, alpha, beta, k,   \
                                    relu, buf + 3 * W * C);                                     \
                    tag[slot] = id;                                                             \
                }                                                                               \
            }                                                                                   \
            for (int64_t ox = 0; ox < OW; ox++) {                                               \
                int64_t c0 = 2 * ox, c1 = c0 + 3 < W ? c0 + 3 : W;                              \
                float *m = buf + 3 * W * C;                                                     \
                for (int64_t c = 0; c < C; c++) m[c] = rows[0][c0 * C + c];                     \
                for (int64_t r = 0; r < r1 - r0; r++)                                           \
                    for (int64_t q = c0; q < c1; q++)                                           \
                        for (int64_t c = 0; c < C; c++) {                                       \
                            float v = rows[r][q * C + c];                                       \
                            m[c] = v > m[c] ? v : m[c];                                         \
                        }                                                                       \
                T *yo = y + ((n * OH + oy) * OW + ox) * C;                                      \
                for (int64_t c = 0; c < C; c++) yo[c] = store_##SUFFIX(m[c]);                   \
            }                                                                                   \
        }                                                                                       \
        free(buf);                                                                              \
        }                                                                                       \
        return failed;                                                                          \
    }

/* Contiguous NCHW: unit = (image, tile of TILE spatial positions), all C planes of the tile. */
#define DEFINE_NCHW(SUFFIX, T)                                                                   \
    int lrn_nchw_##SUFFIX(const T *x, T *y, int64_t u0, int64_t u1, int64_t C, int64_t HW,      \
                          int64_t size, float alpha, float beta, float k, int relu) {           \
        int64_t h = size / 2, tiles = (HW + TILE - 1) / TILE;                                   \
        int failed = 0;                                                                         \
        _Pragma("omp parallel if (u1 - u0 >= MIN_PARALLEL_UNITS / 8)") {                        \
        float *buf = (float *)malloc(sizeof(float) * TILE * (2 * C + 2 * h + 1));              \
        float *a = buf, *sq = buf + C * TILE, *s = buf + (2 * C + 2 * h) * TILE;                \
        if (!buf) _Pragma("omp atomic write") failed = 1;                                      \
        else {                                                                                  \
            memset(sq, 0, sizeof(float) * h * TILE);                                            \
            memset(sq + (C + h) * TILE, 0, sizeof(float) * h * TILE);                           \
        }                                                                                       \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t u = u0; u < u1; u++) {                                                     \
            if (!buf) continue;                                                                 \
            int64_t n = u / tiles, p0 = (u % tiles) * TILE;                                     \
            int64_t T_ = HW - p0 < TILE ? HW - p0 : TILE;                                       \
            const T *xn = x + n * C * HW + p0;                                                  \
            T *yn = y + n * C * HW + p0;                                                        \
            for (int64_t c = 0; c < C; c++) {                                                   \
                for (int64_t t = 0; t < T_; t++) {                                              \
                    float v = load_##SUFFIX(xn[c * HW + t]);                                    \
                    if (relu) v = v > 0.0f ? v : 0.0f;                                          \
                    a[c * TILE + t] = v;                                                        \
                    sq[(c + h) * TILE + t] = v * v;                                             \
                }                                                                               \
            }                                                                                   \
            for (int64_t c = 0; c < C; c++) {                                                   \
                float *sc = s; /* one plane of sums, reused per channel */                      \
                for (int64_t t = 0; t < T_; t++) sc[t] = sq[c * TILE + t];                      \
                for (int64_t j = 1; j < size; j++)                                              \
                    for (int64_t t = 0; t < T_; t++) sc[t] += sq[(c + j) * TILE + t];           \
                lrn_scale(sc, T_, alpha, beta, k);                                              \
                for (int64_t t = 0; t < T_; t++)                                                \
                    yn[c * HW + t] = store_##SUFFIX(a[c * TILE + t] * sc[t]);                   \
            }                                                                                   \
        }                                                                                       \
        free(buf);                                                                              \
        }                                                                                       \
        return failed;                                                                          \
    }

DEFINE_PIXELS(f32, float)
DEFINE_PIXELS(bf16, uint16_t)
DEFINE_PIXELS(f16, _Float16)
DEFINE_NHWC(f32, float)
DEFINE_NHWC(bf16, uint16_t)
DEFINE_NHWC(f16, _Float16)
DEFINE_POOL(f32, float)
DEFINE_POOL(bf16, uint16_t)
DEFINE_POOL(f16, _Float16)
DEFINE_NCHW(f32, float)
DEFINE_NCHW(bf16, uint16_t)
DEFINE_NCHW(f16, _Float16)

/* The int8 model's LRN boundary in one pass: uint8 (N, H, W, C) with (in_scale, in_zp) ->
 * dequantise -> LRN in fp32 -> 3x3 stride-2 max pooling -> requantise with (1 / out_scale,
 * out_zp), rounding half to even and clamping to [qmin, qmax]. Same units and row cache as
 * lrn_pool_nhwc_*; each input row is dequantised into a float row before pixels_f32. */
int lrn_pool_nhwc_u8(const uint8_t *x, uint8_t *y, int64_t N, int64_t H, int64_t W, int64_t C, int64_t OH,
                     int64_t OW, int64_t size, float alpha, float beta, float k, float in_scale, int in_zp,
                     float out_inv_scale, int out_zp, int qmin, int qmax) {
    int failed = 0;
    _Pragma("omp parallel if (N * OH >= 4)") {
    int64_t work = 2 * C + 2 * (size / 2) + 1;
    float *buf = (float *)malloc(sizeof(float) * (4 * W * C + work));
    int64_t tag[3] = {-1, -1, -1};
    if (!buf) _Pragma("omp atomic write") failed = 1;
    _Pragma("omp for schedule(static)")
    for (int64_t u = 0; u < N * OH; u++) {
        if (!buf) continue;
        int64_t n = u / OH, oy = u % OH;
        int64_t r0 = 2 * oy, r1 = r0 + 3 < H ? r0 + 3 : H;
        float *rows[3], *tmp = buf + 3 * W * C, *m = buf + 4 * W * C;
        for (int64_t r = r0; r < r1; r++) {
            int64_t id = n * H + r, slot = r % 3;
            rows[r - r0] = buf + slot * W * C;
            if (tag[slot] != id) {
                const uint8_t *xr = x + id * W * C;
                for (int64_t i = 0; i < W * C; i++) tmp[i] = (float)((int)xr[i] - in_zp) * in_scale;
                pixels_f32(tmp, rows[r - r0], W, C, size, alpha, beta, k, 0, m);
                tag[slot] = id;
            }
        }
        for (int64_t ox = 0; ox < OW; ox++) {
            int64_t c0 = 2 * ox, c1 = c0 + 3 < W ? c0 + 3 : W;
            for (int64_t c = 0; c < C; c++) m[c] = rows[0][c0 * C + c];
            for (int64_t r = 0; r < r1 - r0; r++)
                for (int64_t q = c0; q < c1; q++)
                    for (int64_t c = 0; c < C; c++) {
                        float v = rows[r][q * C + c];
                        m[c] = v > m[c] ? v : m[c];
                    }
            uint8_t *yo = y + ((n * OH + oy) * OW + ox) * C;
            for (int64_t c = 0; c < C; c++) {
                float q = nearbyintf(m[c] * out_inv_scale) + (float)out_zp;
                yo[c] = (uint8_t)(q < (float)qmin ? qmin : q > (float)qmax ? qmax : q);
            }
        }
    }
    free(buf);
    }
    return failed;
}
