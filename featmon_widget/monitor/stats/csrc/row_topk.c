/* Each picked row's k strongest features, for the history ring (see monitor/history.py).
 *
 * featmon_row_topk: for rows pick[0..m) of acts [rows, f] (float32, row-major), the k largest
 * values, largest first, with their feature indices; NaN ranks above every number (as in
 * torch.topk) and equal values keep the lower index first.
 *
 * Why C: torch.topk over [100, 24576] costs about 15 reads of it on a 2-core CPU, and the rows
 * had to be gathered into a copy first. Here each row is read once, in order: a vectorized
 * test of 64 values at a time against the current k-th best skips nearly all of them, and the
 * few that beat it are inserted into a sorted list of k. */
#include <stdint.h>

#include "featmon_protocol.h" /* this file's prototype */

enum { BLOCK = 64 };

/* Whether a ranks strictly below v (NaN above numbers; among NaNs the earlier stays first). */
static int ranks_below(float a, float v) {
    if (v != v) return a == a;
    return a == a && a < v;
}

static void insert(float *val, int32_t *idx, int64_t *held, int64_t k, float v, int32_t i) {
    int64_t j = *held < k ? *held : k - 1; /* full: the last entry drops out */
    while (j > 0 && ranks_below(val[j - 1], v)) {
        val[j] = val[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    val[j] = v;
    idx[j] = i;
    if (*held < k) (*held)++;
}

/* Whether any of x[0..n) could enter a full list whose last entry is kth. */
static int any_beats(const float *restrict x, int64_t n, float kth) {
    int any = 0;
    const int kth_is_number = kth == kth;
    for (int64_t q = 0; q < n; q++) any |= (x[q] > kth) | ((x[q] != x[q]) & kth_is_number);
    return any;
}

static void row_topk(const float *x, int64_t f, int64_t k, float *val, int32_t *idx) {
    int64_t held = 0, i = 0;
    for (; i < f && held < k; i++) insert(val, idx, &held, k, x[i], (int32_t)i);
    for (; i < f; i += BLOCK) {
        const int64_t n = f - i < BLOCK ? f - i : BLOCK;
        if (!any_beats(x + i, n, val[k - 1])) continue;
        for (int64_t q = 0; q < n; q++) {
            const float v = x[i + q], kth = val[k - 1];
            if (v > kth || (v != v && kth == kth)) insert(val, idx, &held, k, v, (int32_t)(i + q));
        }
    }
}

/* acts [rows, f]; pick [m] row numbers; outputs val [m, k] float32 and idx [m, k] int32;
 * 1 <= k <= f. A pick outside 0..rows-1 (never made by the monitor) reads nothing and gives
 * index -1, value NaN. */
void featmon_row_topk(const float *acts, int64_t rows, int64_t f, const int64_t *pick,
                      int64_t m, int64_t k, float *val, int32_t *idx, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < m; r++) {
        if (pick[r] < 0 || pick[r] >= rows) {
            for (int64_t j = 0; j < k; j++) val[r * k + j] = 0.0f / 0.0f, idx[r * k + j] = -1;
            continue;
        }
        row_topk(acts + pick[r] * f, f, k, val + r * k, idx + r * k);
    }
    (void)threads;
}
