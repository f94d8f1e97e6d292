/* The pair scores of a concat critic with one hidden layer, and their gradients, on the CPU:
 *
 *   out[i, j] = sum_h w[h] relu(ha[i, h] + hb[j, h])       for every row i of ha and j of hb
 *
 * float32, row-major, contiguous. Built and loaded by pair_kernels.py, which pads every shape to
 * whole tiles (rows a multiple of TILE, the hidden width a multiple of LANES; zero padding adds
 * nothing) and passes torch's thread count.
 *
 * Why by hand: inductor's loops reduce over one accumulator at a time, so every step waits on the
 * last add. Here a tile of TILE x TILE pairs (forward) or TILE anchors (backward) keeps that many
 * independent vector accumulators in registers, and the backward's two reductions, over i and over
 * j, share one pass. The vectors are GCC/Clang vector extensions: the compiler picks the instructions
 * for the machine it builds on (-march=native). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
#define TILE 4

typedef int64_t idx;
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(float))));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){0} + x; }
static inline vf abs_v(vf x) { return (vf)((vi)x & 0x7fffffff); }

static inline float total(vf v)
{
    float s = 0.f;
    for (int l = 0; l < LANES; l++)
        s += v[l];
    return s;
}

static float dot(const float *x, const float *w, idx H)
{
    vf acc = {0};
    for (idx h = 0; h < H; h += LANES)
        acc += load(x + h) * load(w + h);
    return total(acc);
}

int pair_kernel_lanes(void) { return LANES; }
int pair_kernel_tile(void) { return TILE; }

/* relu(x) = (x + |x|) / 2, so out[i, j] = (w.ha_i + w.hb_j + sum_h w_h |ha_ih + hb_jh|) / 2: two dot
 * products per row, and three vector operations (add, abs, fused multiply-add) per pair and lane. */
void pair_forward(const float *ha, const float *hb, const float *w, float *out, idx na, idx nb, idx H, int threads)
{
    float *row_a = malloc(sizeof(float) * na), *row_b = malloc(sizeof(float) * nb);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (idx i = 0; i < na; i++)
            row_a[i] = dot(ha + i * H, w, H);
#pragma omp for schedule(static)
        for (idx j = 0; j < nb; j++)
            row_b[j] = dot(hb + j * H, w, H);
#pragma omp for schedule(static)
        for (idx i = 0; i < na; i += TILE)
            for (idx j = 0; j < nb; j += TILE) {
                vf acc[TILE][TILE] = {{{0}}};
                for (idx h = 0; h < H; h += LANES) {
                    vf wv = load(w + h), a[TILE], b[TILE];
                    for (int r = 0; r < TILE; r++)
                        a[r] = load(ha + (i + r) * H + h);
                    for (int c = 0; c < TILE; c++)
                        b[c] = load(hb + (j + c) * H + h);
                    for (int r = 0; r < TILE; r++)
                        for (int c = 0; c < TILE; c++)
                            acc[r][c] += wv * abs_v(a[r] + b[c]);
                }
                for (int r = 0; r < TILE; r++)
                    for (int c = 0; c < TILE; c++)
                        out[(i + r) * nb + j + c] = 0.5f * (row_a[i + r] + row_b[j + c] + total(acc[r][c]));
            }
    }
    free(row_a);
    free(row_b);
}

/* With through_a[i, h] = sum_j g_ij 1[ha_ih + hb_jh > 0] and through_b[j, h] likewise over i:
 * ga = through_a * w, gb = through_b * w, gw = sum_i ha_i * through_a_i + sum_j hb_j * through_b_j
 * (gw skipped when NULL). A thread takes whole LANES-wide slices of the hidden units, which share
 * nothing; gb holds through_b while the slice accumulates. */
void pair_backward(const float *ha, const float *hb, const float *w, const float *g, float *ga, float *gb, float *gw,
                   idx na, idx nb, idx H, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static)
    for (idx h = 0; h < H; h += LANES) {
        vf wv = load(w + h), through_w = {0};
        for (idx j = 0; j < nb; j++)
            store(gb + j * H + h, (vf){0});
        for (idx i = 0; i < na; i += TILE) {
            vf a[TILE], ta[TILE] = {{0}};
            for (int r = 0; r < TILE; r++)
                a[r] = load(ha + (i + r) * H + h);
            for (idx j = 0; j < nb; j++) {
                vf b = load(hb + j * H + h), column = {0};
                for (int r = 0; r < TILE; r++) {
                    vf routed = (vf)((vi)splat(g[(i + r) * nb + j]) & (a[r] + b > 0));
                    ta[r] += routed;
                    column += routed;
                }
                store(gb + j * H + h, load(gb + j * H + h) + column);
            }
            for (int r = 0; r < TILE; r++) {
                through_w += a[r] * ta[r];
                store(ga + (i + r) * H + h, ta[r] * wv);
            }
        }
        for (idx j = 0; j < nb; j++) {
            vf tb = load(gb + j * H + h);
            through_w += load(hb + j * H + h) * tb;
            store(gb + j * H + h, tb * wv);
        }
        if (gw)
            store(gw + h, through_w);
    }
}
