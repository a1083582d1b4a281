/* Winograd F(m x m, r x r) transforms for stride-1 "same" convolutions on channels-last fp32.
 *
 * Winograd's minimal filtering (Lavin and Gray, 2016) computes each m x m output tile from an
 * a x a input tile (a = m + r - 1) with a*a multiplies per (input, output) channel pair instead of
 * m*m*r*r, and the a*a products are independent matrix products that torch.bmm runs at full GEMM
 * speed. These kernels do the cheap parts around those products, for r = 3 and 5 and any tile
 * size up to 8x8: the transform matrices come from the caller (winograd.py builds them by
 * Toom-Cook), so one pair of loops serves conv2 (5x5) and conv3..conv5 (3x3).
 *   V = B^T d B  (input tiles -> a*a*G matrices of (tiles, C_in / G)), BT is a x a
 *   Y = A^T M A  (a*a*G matrices of (tiles, C_out / G) -> m x m outputs, + bias, ReLU), AT is m x a
 * Matrix xi = i * a + j of group g is number xi * G + g. Tiles are numbered
 * p = (n * T_H + ty) * T_W + tx with T_H = ceil(H / m), T_W = ceil(W / m); a tile's input window
 * starts at (m * ty - pad, m * tx - pad), outside the image it reads zeros. The tile side is a
 * compile-time constant in each instance of the loops (a switch over always-inlined bodies), so the
 * coefficient loops unroll into register arithmetic on blocks of VL channels (GCC/Clang vectors).
 * Tiles are shared out dynamically: on a loaded machine a thread the scheduler parks does not hold
 * up the whole layer at the barrier. Return codes: 0 done, 1 out of memory, 2 a tile size or grouping not compiled here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_A 8 /* tiles up to 8x8: F(6x6, 3x3), F(4x4, 5x5) */
#define VL 16    /* channels per block: one AVX-512 register, two AVX2 ones */

/* The tiles compiled: F(2..6, 3) and F(2..4, 5) */
static int supported(int64_t m, int64_t a) {
    return (a - m == 2 && m >= 2 && m <= 6) || (a - m == 4 && m >= 2 && m <= 4);
}

typedef float vec __attribute__((vector_size(4 * VL))); /* GCC/Clang vectors: one register or a pair */
typedef int32_t ivec __attribute__((vector_size(4 * VL)));

static inline vec load(const float *src, int64_t cw) { /* cw < VL: the rest are zeros */
    vec v = {0};
    if (cw == VL) memcpy(&v, src, sizeof v); /* a constant size: one unaligned load */
    else memcpy(&v, src, sizeof(float) * cw);
    return v;
}

static inline void store(float *dst, vec v, int64_t cw) {
    if (cw == VL) memcpy(dst, &v, sizeof v);
    else memcpy(dst, &v, sizeof(float) * cw);
}

/* One tile's input transform, all channels, with the tile side a a compile-time constant at each
 * call site (always inlined into a switch) so the coefficient loops unroll. Per group and tile row i:
 * t[j] = sum_k BT[i][k] d[k][j] (a rows of the group's channels, in L1), then
 * V[i][j] = sum_k t[k] BT[j][k], each a whole contiguous row of V. zeros: C zero floats. */
static inline __attribute__((always_inline)) void input_tile(const float *x, float *V, float *t, const float *zeros,
                                                             int64_t H, int64_t W, int64_t C, int64_t G,
                                                             int64_t n, int64_t r0, int64_t q0, const int64_t a,
                                                             const float *BT) {
    const float *d[MAX_A * MAX_A];
    int64_t Cg = C / G, nb = (Cg + VL - 1) / VL;
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < a; j++) {
            int64_t r = r0 + i, q = q0 + j;
            d[i * a + j] = r >= 0 && r < H && q >= 0 && q < W ? x + ((n * H + r) * W + q) * C : zeros;
        }
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < a; i++) {
            for (int64_t b = 0; b < nb; b++) {
                int64_t c = g * Cg + b * VL, cw = Cg - b * VL < VL ? Cg - b * VL : VL;
                for (int64_t j = 0; j < a; j++) {
                    vec acc = {0};
                    for (int64_t k = 0; k < a; k++) acc += BT[i * a + k] * load(d[k * a + j] + c, cw);
                    memcpy(t + (j * nb + b) * VL, &acc, sizeof acc);
                }
            }
            for (int64_t j = 0; j < a; j++) {
                float *row = V + ((i * a + j) * G + g) * Cg;
                for (int64_t b = 0; b < nb; b++) {
                    vec acc = {0}, tk;
                    int64_t cw = Cg - b * VL < VL ? Cg - b * VL : VL;
                    for (int64_t k = 0; k < a; k++) {
                        memcpy(&tk, t + (k * nb + b) * VL, sizeof tk);
                        acc += BT[j * a + k] * tk;
                    }
                    store(row + b * VL, acc, cw);
                }
            }
        }
}

/* V is tile-major: tile p's a * a * G rows of C / G values start at p * a * a * C (the products read it
 * through a strided view), so each tile's transform writes one contiguous block. */
int wino_input_f32(const float *x, float *V, int64_t N, int64_t H, int64_t W, int64_t C, int64_t G,
                   int64_t m, int64_t a, int64_t pad, const float *BT) {
    if (!supported(m, a) || G < 1 || C % G) return 2;
    int64_t TH = (H + m - 1) / m, TW = (W + m - 1) / m, P = N * TH * TW, Cg = C / G, nb = (Cg + VL - 1) / VL;
    int failed = 0;
#pragma omp parallel if (P >= 8)
    {
        float *t = (float *)malloc(sizeof(float) * (a * nb * VL + C)), *zeros = t ? t + a * nb * VL : NULL;
        if (!t) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(zeros, 0, sizeof(float) * C);
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t p = 0; p < P; p++) {
            if (!t) continue;
            int64_t n = p / (TH * TW), r0 = m * ((p / TW) % TH) - pad, q0 = m * (p % TW) - pad;
            float *Vp = V + p * a * a * C;
            switch (a) {
#define CASE(A) case A: input_tile(x, Vp, t, zeros, H, W, C, G, n, r0, q0, A, BT); break;
                CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
            }
        }
        free(t);
    }
    return failed;
}

/* One tile's output transform (+ bias, ReLU), all channels of group g: s[i][l] = sum_k AT[i][k] M[k][l]
 * (m accumulators in registers; s: m * a rows, in L1), then
 * y[i][j] = sum_l s[i][l] AT[j][l] + bias. */
static inline __attribute__((always_inline)) void output_tile(const float *M, const float *bias, float *y, float *s,
                                                              int64_t H, int64_t W, int64_t C, int64_t G,
                                                              int64_t P, int64_t p, int64_t n, int64_t r0,
                                                              int64_t q0, int64_t g, const int64_t m,
                                                              const int64_t a, const float *AT, int relu) {
    int64_t Cg = C / G, nb = (Cg + VL - 1) / VL;
    vec zero = {0};
    for (int64_t l = 0; l < a; l++)
        for (int64_t b = 0; b < nb; b++) {
            int64_t cw = Cg - b * VL < VL ? Cg - b * VL : VL;
            vec acc[MAX_A] = {{0}};
            for (int64_t k = 0; k < a; k++) {
                const float *src = M + (((k * a + l) * G + g) * P + p) * Cg + b * VL;
                if (p + 2 < P) __builtin_prefetch(src + 2 * Cg); /* a*a*G rows at once outrun the hardware prefetcher */
                vec v = load(src, cw);
                for (int64_t i = 0; i < m; i++) acc[i] += AT[i * a + k] * v;
            }
            for (int64_t i = 0; i < m; i++) memcpy(s + ((i * a + l) * nb + b) * VL, &acc[i], sizeof acc[i]);
        }
    for (int64_t b = 0; b < nb; b++) {
        int64_t cw = Cg - b * VL < VL ? Cg - b * VL : VL;
        vec bv = bias ? load(bias + g * Cg + b * VL, cw) : zero;
        for (int64_t i = 0; i < m && r0 + i < H; i++)
            for (int64_t j = 0; j < m && q0 + j < W; j++) {
                vec o = bv, sl;
                for (int64_t l = 0; l < a; l++) {
                    memcpy(&sl, s + ((i * a + l) * nb + b) * VL, sizeof sl);
                    o += AT[j * a + l] * sl;
                }
                if (relu) o = (vec)((ivec)o & (o > zero)); /* a comparison gives all-ones lanes */
                store(y + ((n * H + r0 + i) * W + q0 + j) * C + g * Cg + b * VL, o, cw);
            }
    }
}

int wino_output_f32(const float *M, const float *bias, float *y, int64_t N, int64_t H, int64_t W, int64_t C,
                    int64_t G, int64_t m, int64_t a, const float *AT, int relu) {
    if (!supported(m, a) || G < 1 || C % G) return 2;
    int64_t TH = (H + m - 1) / m, TW = (W + m - 1) / m, P = N * TH * TW, Cg = C / G, nb = (Cg + VL - 1) / VL;
    int failed = 0;
#pragma omp parallel if (P >= 8)
    {
        float *s = (float *)malloc(sizeof(float) * m * a * nb * VL);
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t p = 0; p < P; p++) {
            if (!s) continue;
            int64_t n = p / (TH * TW), r0 = m * ((p / TW) % TH), q0 = m * (p % TW);
            for (int64_t g = 0; g < G; g++)
                switch (m * 16 + a) { /* the pairs (m, a) of r = 3 and r = 5 */
#define CASE(M_, A) case M_ * 16 + A: output_tile(M, bias, y, s, H, W, C, G, P, p, n, r0, q0, g, M_, A, AT, relu); break;
                    CASE(2, 4) CASE(3, 5) CASE(4, 6) CASE(5, 7) CASE(6, 8) CASE(2, 6) CASE(3, 7) CASE(4, 8)
#undef CASE
                }
        }
        free(s);
    }
    return failed;
}
