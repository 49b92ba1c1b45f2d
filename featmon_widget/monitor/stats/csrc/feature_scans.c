/* Reads over every feature that a snapshot or a ranking query makes (see monitor/firing.py and
 * monitor/ranking.py).
 *
 * featmon_firing_summary: from the per-feature counts, in one pass, the firing-frequency
 * histogram, the never-fired / never-seen / ultra-rare counts and the total of active values.
 * featmon_top_k: the k largest of a float64 array in the order a full stable sort gives;
 * featmon_top_k_metric: the same of a metric computed from the running totals as it goes.
 *
 * Why C: at a million features torch needed a dozen passes for the summary (conversions,
 * division, log10, bucketize, scatter_add: ~15 ms on a 2-core CPU) and topk plus the tie checks
 * for the ranking (~7 ms); each is one read of the data here. At four million, making the
 * ranked metric's array alone cost more than the scan. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* SCAN_BINS, METRIC_*, VECTOR_CLONES (x86-64-v4: its int64 -> double conversions vectorize),
 * this file's prototypes. */
#include "featmon_protocol.h"

enum { LANES = 4, CHUNK = 1024, BLOCK = 256, LOW_EXP = -64 };

/* One chunk, vectorized: each feature's bin (SCAN_BINS for one that never fired) into bin[],
 * and the four counts added to counts[]. A ratio's binary exponent e gives base[e] = the thresholds at
 * or below 2^e; at most two more lie inside its octave (they are a quarter decade apart), so
 * two compares finish it: no division of the search into dependent loads. */
static VECTOR_CLONES void bin_chunk(const int64_t *restrict active, const int64_t *restrict count,
                                    int64_t m, const double *restrict t,
                                    const int64_t *restrict base, double rare_floor,
                                    int64_t *restrict bin, int64_t *restrict counts) {
    int64_t never_fired = 0, never_seen = 0, rare = 0, active_sum = 0;
    for (int64_t q = 0; q < m; q++) {
        const int64_t a = active[q], c = count[q];
        const int64_t seen = c > 0, fired = seen & (a > 0);
        const double r = (double)a / (double)(seen ? c : 1);
        union { double d; int64_t i; } bits = {r};
        int64_t e = (bits.i >> 52) - 1023 - LOW_EXP; /* r >= 0: the sign bit is clear */
        e = e < 0 ? 0 : e; /* r = 0 */
        e = e > 1 - LOW_EXP ? 1 - LOW_EXP : e; /* r >= 2 (never from real counts) */
        const int64_t b = base[e], binned = b + (r >= t[b]) + (r >= t[b + 1]);
        bin[q] = fired ? binned : SCAN_BINS; /* both sides computed: a branch would stop vectors */
        never_fired += seen & !fired;
        never_seen += !seen;
        rare += fired & (r < rare_floor);
        active_sum += a;
    }
    counts[0] += never_fired;
    counts[1] += never_seen;
    counts[2] += rare;
    counts[3] += active_sum;
}

/* active [n], count [n] int64; thresholds [SCAN_BINS - 1] ascending (a ratio r goes to the bin
 * "how many thresholds are <= r", torch.bucketize(right=True)); out [SCAN_BINS + 4]: the bins, then
 * never fired (seen, never active), never seen, ultra-rare (fired, ratio < rare_floor) and the
 * sum of active counts. The ratio is active / count in float64, as torch divides. */
void featmon_firing_summary(const int64_t *active, const int64_t *count, int64_t n,
                            const double *thresholds, double rare_floor, int64_t *out) {
    double t[SCAN_BINS + 1]; /* padded: +inf is above every ratio */
    for (int j = 0; j < SCAN_BINS - 1; j++) t[j] = thresholds[j];
    t[SCAN_BINS - 1] = t[SCAN_BINS] = INFINITY;
    int64_t base[2 - LOW_EXP]; /* by exponent LOW_EXP..1: a ratio is at least 2^-63 */
    for (int e = LOW_EXP; e <= 1; e++) {
        int64_t below = 0;
        for (int j = 0; j < SCAN_BINS - 1; j++) below += ldexp(1.0, e) >= t[j];
        base[e - LOW_EXP] = below;
    }
    /* Several histograms, so that runs of features in one bin do not wait on each other's
     * increments; the last bin of each takes the features that never fired. */
    int64_t hist[LANES][SCAN_BINS + 1] = {{0}}, counts[4] = {0}, bin[CHUNK];
    for (int64_t i = 0; i < n; i += CHUNK) {
        const int64_t m = n - i < CHUNK ? n - i : CHUNK;
        bin_chunk(active + i, count + i, m, t, base, rare_floor, bin, counts);
        for (int64_t q = 0; q < m; q++) hist[q & (LANES - 1)][bin[q]]++;
    }
    for (int j = 0; j < SCAN_BINS; j++) {
        int64_t s = 0;
        for (int l = 0; l < LANES; l++) s += hist[l][j];
        out[j] = s;
    }
    for (int j = 0; j < 4; j++) out[SCAN_BINS + j] = counts[j];
}

/* The ranking key: NaN counts as -inf (and, like every tie, goes to the lower position). */
static double key_of(double v) { return v != v ? -INFINITY : v; }

/* Whether (ka, ia) ranks below (kb, ib): a smaller key, or the same key at a higher position. */
static int below(double ka, int64_t ia, double kb, int64_t ib) {
    return ka < kb || (ka == kb && ia > ib);
}

/* Min-heap on rank (the weakest kept entry at the root). */
static void sift_down(double *key, int64_t *idx, int64_t held, int64_t at) {
    for (;;) {
        int64_t low = at;
        const int64_t l = 2 * at + 1, r = l + 1;
        if (l < held && below(key[l], idx[l], key[low], idx[low])) low = l;
        if (r < held && below(key[r], idx[r], key[low], idx[low])) low = r;
        if (low == at) return;
        const double k = key[at];
        const int64_t i = idx[at];
        key[at] = key[low], idx[at] = idx[low];
        key[low] = k, idx[low] = i;
        at = low;
    }
}

static void sift_up(double *key, int64_t *idx, int64_t at) {
    while (at > 0) {
        const int64_t up = (at - 1) / 2;
        if (!below(key[at], idx[at], key[up], idx[up])) return;
        const double k = key[at];
        const int64_t i = idx[at];
        key[at] = key[up], idx[at] = idx[up];
        key[up] = k, idx[up] = i;
        at = up;
    }
}

/* Whether any of x[0..m) beats a full heap whose weakest key is `weakest`: only a strictly
 * larger value can (an equal one sits at a higher position; NaN is -inf). */
static VECTOR_CLONES int any_above(const double *restrict x, int64_t m, double weakest) {
    int any = 0;
    for (int64_t q = 0; q < m; q++) any |= x[q] > weakest;
    return any;
}

/* The k best (key, position) seen so far, as a min-heap on rank. */
typedef struct {
    double *key;
    int64_t *idx;
    int64_t held, k;
} Heap;

/* Offer values x[0..m), at positions first.., in position order. */
static void offer(Heap *h, const double *x, int64_t m, int64_t first) {
    int64_t q = 0;
    for (; q < m && h->held < h->k; q++, h->held++) {
        h->key[h->held] = key_of(x[q]);
        h->idx[h->held] = first + q;
        sift_up(h->key, h->idx, h->held);
    }
    if (q == m || !any_above(x + q, m - q, h->key[0])) return;
    for (; q < m; q++) {
        if (x[q] > h->key[0]) { /* strictly larger: it ranks above the weakest */
            h->key[0] = x[q];
            h->idx[0] = first + q;
            sift_down(h->key, h->idx, h->held, 0);
        }
    }
}

/* Heap order to rank order into out[0..held): take the weakest off the end, held times. */
static void drain(Heap *h, int64_t *out) {
    for (int64_t last = h->held - 1; last >= 0; last--) {
        out[last] = h->idx[0];
        h->key[0] = h->key[last], h->idx[0] = h->idx[last];
        sift_down(h->key, h->idx, last, 0);
    }
}

static void heap_close(Heap *h) {
    free(h->key);
    free(h->idx);
}

/* An empty heap of k; 0 (nothing held) if it could not allocate. */
static int heap_open(Heap *h, int64_t k) {
    h->key = malloc((size_t)k * sizeof(double));
    h->idx = malloc((size_t)k * sizeof(int64_t));
    h->held = 0, h->k = k;
    if (h->key != NULL && h->idx != NULL) return 1;
    heap_close(h);
    return 0;
}

/* values [n] float64; 1 <= k <= n; out [k] gets the positions of the k largest, largest
 * first, ties to the lower position, NaN as -inf. Returns 0, or -1 if it could not allocate. */
int featmon_top_k(const double *values, int64_t n, int64_t k, int64_t *out) {
    Heap h;
    if (!heap_open(&h, k)) return -1;
    for (int64_t i = 0; i < n; i += BLOCK) offer(&h, values + i, n - i < BLOCK ? n - i : BLOCK, i);
    drain(&h, out);
    heap_close(&h);
    return 0;
}

/* metric [m] of features first.. from the running totals, operation for operation as
 * running.metric_of computes it (NaN where undefined). */
static VECTOR_CLONES void metric_block(int metric, const int64_t *restrict count,
                                       const int64_t *restrict active,
                                       const double *restrict active_sum,
                                       const double *restrict mean, const double *restrict m2,
                                       const double *restrict min, const double *restrict max,
                                       int64_t m, double *restrict out) {
    const double nan = NAN;
    switch (metric) {
    case METRIC_MEAN:
        for (int64_t q = 0; q < m; q++) out[q] = count[q] > 0 ? mean[q] : nan;
        break;
    case METRIC_MEAN_ACTIVE:
        for (int64_t q = 0; q < m; q++) out[q] = active_sum[q] / (double)active[q];
        break;
    case METRIC_MAX:
        for (int64_t q = 0; q < m; q++) out[q] = count[q] > 0 ? max[q] : nan;
        break;
    case METRIC_MIN:
        for (int64_t q = 0; q < m; q++) out[q] = count[q] > 0 ? min[q] : nan;
        break;
    case METRIC_ACTIVE_RATIO:
        for (int64_t q = 0; q < m; q++) out[q] = (double)active[q] / (double)count[q];
        break;
    case METRIC_COUNT:
        for (int64_t q = 0; q < m; q++) out[q] = (double)count[q];
        break;
    case METRIC_ACTIVE_COUNT:
        for (int64_t q = 0; q < m; q++) out[q] = (double)active[q];
        break;
    default: /* METRIC_STD: the sample deviation, 0 below two values */
        for (int64_t q = 0; q < m; q++) {
            const int64_t c = count[q];
            const double sd = sqrt(m2[q] / (double)(c > 1 ? c - 1 : 1));
            out[q] = c > 0 ? (c > 1 ? sd : 0.0) : nan;
        }
    }
}

/* featmon_top_k of one metric of the running totals (each [n]), computed block by block as the
 * scan goes: no [n] array of the metric. Returns 0, -1 if it could not allocate, -2 for an
 * unknown metric. */
int featmon_top_k_metric(int metric, const int64_t *count, const int64_t *active,
                         const double *active_sum, const double *mean, const double *m2,
                         const double *min, const double *max, int64_t n, int64_t k,
                         int64_t *out) {
    if (metric < 0 || metric >= N_METRICS) return -2;
    Heap h;
    if (!heap_open(&h, k)) return -1;
    double block[BLOCK];
    for (int64_t i = 0; i < n; i += BLOCK) {
        const int64_t m = n - i < BLOCK ? n - i : BLOCK;
        metric_block(metric, count + i, active + i, active_sum + i, mean + i, m2 + i, min + i,
                     max + i, m, block);
        offer(&h, block, m, i);
    }
    drain(&h, out);
    heap_close(&h);
    return 0;
}
