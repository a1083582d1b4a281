/* Winograd F(2x2, 3x3) transforms for 3x3, stride-1, pad-1 convolutions on channels-last fp32.
 *
 * conv3..conv5 of AlexNet run on 13x13 maps; Winograd's minimal filtering computes each 2x2
 * output tile from a 4x4 input tile with 16 multiplies per (input, output) channel pair instead
 * of 36, and the 16 products are 16 independent matrix products that torch.bmm runs at full GEMM
 * speed. These kernels do the cheap parts around those products (Lavin and Gray, 2016):
 *   V = B^T d B  (input tiles -> 16 matrices of (tiles, C_in / groups))
 *   Y = A^T M A  (16 matrices of (tiles, C_out / groups) -> 2x2 outputs, + bias, ReLU)
 * Tiles are numbered p = (n * TH + ty) * TW + tx with TH = ceil(H / 2), TW = ceil(W / 2).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int wino_input_f32(const float *x, float *V, int64_t N, int64_t H, int64_t W, int64_t C, int64_t G) {
    int64_t TH = (H + 1) / 2, TW = (W + 1) / 2, P = N * TH * TW, Cg = C / G;
    int failed = 0;
#pragma omp parallel if (P >= 8)
    {
        float *d = (float *)malloc(sizeof(float) * 32 * C); /* 16 tile vectors + 16 row-transformed */
        if (!d) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t p = 0; p < P; p++) {
            if (!d) continue;
            float *t = d + 16 * C;
            int64_t n = p / (TH * TW), ty = (p / TW) % TH, tx = p % TW;
            for (int64_t i = 0; i < 4; i++) {
                int64_t r = 2 * ty - 1 + i;
                for (int64_t j = 0; j < 4; j++) {
                    int64_t q = 2 * tx - 1 + j;
                    float *dst = d + (i * 4 + j) * C;
                    if (r < 0 || r >= H || q < 0 || q >= W) memset(dst, 0, sizeof(float) * C);
                    else memcpy(dst, x + ((n * H + r) * W + q) * C, sizeof(float) * C);
                }
            }
            /* rows: t_i = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)_i, per column j */
            for (int64_t j = 0; j < 4; j++) {
                const float *d0 = d + j * C, *d1 = d + (4 + j) * C, *d2 = d + (8 + j) * C, *d3 = d + (12 + j) * C;
                float *t0 = t + j * C, *t1 = t + (4 + j) * C, *t2 = t + (8 + j) * C, *t3 = t + (12 + j) * C;
                for (int64_t c = 0; c < C; c++) {
                    t0[c] = d0[c] - d2[c];
                    t1[c] = d1[c] + d2[c];
                    t2[c] = d2[c] - d1[c];
                    t3[c] = d1[c] - d3[c];
                }
            }
            /* columns, written straight into the 16 matrices (xi = 4 i + j, one per group) */
            for (int64_t i = 0; i < 4; i++) {
                const float *a0 = t + (4 * i) * C, *a1 = a0 + C, *a2 = a0 + 2 * C, *a3 = a0 + 3 * C;
                for (int64_t g = 0; g < G; g++) {
                    float *v0 = V + (((4 * i + 0) * G + g) * P + p) * Cg;
                    float *v1 = V + (((4 * i + 1) * G + g) * P + p) * Cg;
                    float *v2 = V + (((4 * i + 2) * G + g) * P + p) * Cg;
                    float *v3 = V + (((4 * i + 3) * G + g) * P + p) * Cg;
                    int64_t o = g * Cg;
                    for (int64_t c = 0; c < Cg; c++) {
                        v0[c] = a0[o + c] - a2[o + c];
                        v1[c] = a1[o + c] + a2[o + c];
                        v2[c] = a2[o + c] - a1[o + c];
                        v3[c] = a1[o + c] - a3[o + c];
                    }
                }
            }
        }
        free(d);
    }
    return failed;
}

int wino_output_f32(const float *M, const float *bias, float *y, int64_t N, int64_t H, int64_t W,
                    int64_t C, int64_t G, int relu) {
    int64_t TH = (H + 1) / 2, TW = (W + 1) / 2, P = N * TH * TW, Cg = C / G;
    int failed = 0;
#pragma omp parallel if (P >= 8)
    {
        float *v = (float *)malloc(sizeof(float) * 4 * Cg); /* the tile's 2x2 outputs of one group */
        if (!v) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t p = 0; p < P; p++) {
            if (!v) continue;
            int64_t n = p / (TH * TW), ty = (p / TW) % TH, tx = p % TW;
            for (int64_t g = 0; g < G; g++) {
                const float *m[16];
                for (int64_t xi = 0; xi < 16; xi++) m[xi] = M + ((xi * G + g) * P + p) * Cg;
                const float *b = bias ? bias + g * Cg : NULL;
                float *v0 = v, *v1 = v + Cg, *v2 = v + 2 * Cg, *v3 = v + 3 * Cg;
                for (int64_t c = 0; c < Cg; c++) { /* A^T = [1 1 1 0; 0 1 -1 -1], rows then columns */
                    float r00 = m[0][c] + m[4][c] + m[8][c], r01 = m[1][c] + m[5][c] + m[9][c];
                    float r02 = m[2][c] + m[6][c] + m[10][c], r03 = m[3][c] + m[7][c] + m[11][c];
                    float r10 = m[4][c] - m[8][c] - m[12][c], r11 = m[5][c] - m[9][c] - m[13][c];
                    float r12 = m[6][c] - m[10][c] - m[14][c], r13 = m[7][c] - m[11][c] - m[15][c];
                    float bc = b ? b[c] : 0.0f;
                    v0[c] = r00 + r01 + r02 + bc;
                    v1[c] = r01 - r02 - r03 + bc;
                    v2[c] = r10 + r11 + r12 + bc;
                    v3[c] = r11 - r12 - r13 + bc;
                }
                for (int64_t k = 0; k < 4; k++) {
                    int64_t r = 2 * ty + k / 2, q = 2 * tx + k % 2;
                    if (r >= H || q >= W) continue;
                    float *dst = y + ((n * H + r) * W + q) * C + g * Cg;
                    const float *src = v + k * Cg;
                    if (relu)
                        for (int64_t c = 0; c < Cg; c++) dst[c] = src[c] > 0.0f ? src[c] : 0.0f;
                    else
                        memcpy(dst, src, sizeof(float) * Cg);
                }
            }
        }
        free(v);
    }
    return failed;
}
