/* A self-check of the dense statistics kernel for machines where torch does not run (an
 * aarch64 build run under qemu; see test_native.py): the kernel against a plain scalar
 * reference on pseudo-random data with NaN/Inf, masks, odd shapes and three thresholds, with
 * and without the in-place JumpReLU, and its float16 widening against the compiler's own
 * __fp16 conversion where there is one.
 * Prints "ok" and exits 0, or names the first mismatch and exits 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featmon_protocol.h" /* the kernel's prototype, DTYPE_* and ACT_* */

/* SAELens' JumpReLU, relu(v) * (v > jump), as torch computes it. */
static float jump_relu(float v, float jump) {
    const float r = v != v ? v : v > 0.0f ? v : 0.0f;
    return r * (v > jump ? 1.0f : 0.0f);
}

static int same(float a, float b) { return a == b || (a != a && b != b); }

static uint64_t state = 88172645463325252ull;
static double uniform(void) { /* xorshift64 */
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}

static int close_to(double got, double want) {
    return fabs(got - want) <= 1e-12 * fmax(1.0, fabs(want)) + 1e-9;
}

static int check_shape(int64_t n, int64_t f, int64_t tokens, double threshold, int threads,
                       int jumprelu) {
    float *x = malloc(sizeof(float) * n * f), *pre = malloc(sizeof(float) * n * f);
    float *jump = malloc(sizeof(float) * f);
    uint8_t *valid = malloc(n);
    double *shift = malloc(sizeof(double) * f), *sums = malloc(sizeof(double) * 5 * f);
    int64_t *counts = malloc(sizeof(int64_t) * 3 * f);
    float *best = malloc(sizeof(float) * n * f);
    int64_t *arg = malloc(sizeof(int64_t) * n * f);
    double *mn = malloc(sizeof(double) * f), *mx = malloc(sizeof(double) * f);
    for (int64_t i = 0; i < n * f; i++) {
        const double u = uniform();
        x[i] = u < 0.01 ? NAN : u < 0.02 ? INFINITY : u < 0.03 ? -INFINITY
               : (float)(floor(uniform() * 8) * 0.5 - 1.5); /* ties are common */
    }
    for (int64_t r = 0; r < n; r++) valid[r] = uniform() > 0.3;
    for (int64_t i = 0; i < f; i++) {
        shift[i] = uniform() - 0.5;
        jump[i] = i % 5 == 0 ? -INFINITY : i % 5 == 1 ? INFINITY : (float)(uniform() - 0.5);
    }
    memcpy(pre, x, sizeof(float) * n * f);
    if (jumprelu) /* the reference's features: activated here, in the kernel's in place */
        for (int64_t i = 0; i < n * f; i++) x[i] = jump_relu(pre[i], jump[i % f]);
    featmon_dense_moments(jumprelu ? pre : x, DTYPE_F32, valid, n, f, shift, threshold, 0,
                          counts, counts + f, counts + 2 * f, sums, sums + f, sums + 2 * f, mn,
                          mx, tokens, best, arg, jumprelu ? ACT_JUMP : ACT_NONE, jump, threads, NULL,
                          0, NULL, NULL, 0, NULL, 0, NULL, 0, NULL, NULL, 0, 0, NULL, NULL);
    int bad = 0;
    for (int64_t i = 0; jumprelu && i < n * f && !bad; i++) bad = !same(pre[i], x[i]);
    if (bad) printf("activated values differ (n=%lld f=%lld)\n", (long long)n, (long long)f);
    for (int64_t i = 0; i < f && !bad; i++) {
        int64_t c = 0, nan = 0, act = 0;
        double as = 0, t1 = 0, t2 = 0, lo = INFINITY, hi = -INFINITY;
        for (int64_t r = 0; r < n; r++) {
            if (!valid[r]) continue;
            const double v = x[r * f + i];
            if (!isfinite(v)) {
                nan++;
                continue;
            }
            c++, t1 += v - shift[i], t2 += (v - shift[i]) * (v - shift[i]);
            if (v > threshold) act++, as += v;
            lo = fmin(lo, v), hi = fmax(hi, v);
        }
        bad = counts[i] != c || counts[f + i] != nan || counts[2 * f + i] != act
              || mn[i] != lo || mx[i] != hi || !close_to(sums[i], as)
              || !close_to(sums[f + i], t1) || !close_to(sums[2 * f + i], t2);
        for (int64_t b = 0; b < n / tokens && !bad; b++) {
            float want = -INFINITY;
            int64_t at = 0;
            for (int64_t t = 0; t < tokens; t++) {
                const float v = x[(b * tokens + t) * f + i];
                if (valid[b * tokens + t] && isfinite(v) && v > threshold && v > want)
                    want = v, at = t;
            }
            bad = best[b * f + i] != want || arg[b * f + i] != at;
        }
        if (bad)
            printf("mismatch: n=%lld f=%lld tokens=%lld threshold=%g jumprelu=%d feature %lld\n",
                   (long long)n, (long long)f, (long long)tokens, threshold, jumprelu,
                   (long long)i);
    }
    free(x), free(pre), free(jump), free(valid), free(shift), free(sums), free(counts), free(best);
    free(arg), free(mn), free(mx);
    return bad;
}

static int check_f16(void) {
#if defined(__aarch64__)
    uint16_t *h = malloc(sizeof(uint16_t) * 65536);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    double shift[65536] = {0}, sums[5 * 65536], mn[65536], mx[65536];
    static int64_t counts[3 * 65536];
    featmon_dense_moments(h, DTYPE_F16, NULL, 1, 65536, shift, 0.0, 0, counts, counts + 65536,
                          counts + 2 * 65536, sums, sums + 65536, sums + 2 * 65536, mn, mx, 0,
                          NULL, NULL, ACT_NONE, NULL, 1, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, 0,
                          NULL, NULL, 0, 0, NULL, NULL);
    for (int i = 0; i < 65536; i++) {
        __fp16 v;
        memcpy(&v, &h[i], 2);
        const float want = (float)v;
        if (isfinite(want) ? (counts[i] != 1 || mn[i] != want) : counts[i] != 0) {
            printf("float16 widening differs at 0x%04x\n", i);
            return 1;
        }
    }
    free(h);
#endif
    return 0;
}

int main(void) {
    static const int64_t shapes[][3] = {{1, 3, 1}, {7, 1500, 7}, {33, 2 * 4096 + 100, 11}, {12, 1024, 1}};
    static const double thresholds[] = {0.0, 0.1, -0.7};
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 3; t++)
            for (int threads = 1; threads <= 2; threads++)
                for (int jumprelu = 0; jumprelu <= 1; jumprelu++)
                    if (check_shape(shapes[s][0], shapes[s][1], shapes[s][2], thresholds[t],
                                    threads, jumprelu))
                        return 1;
    if (check_f16()) return 1;
    printf("ok\n");
    return 0;
}
