/* The dense statistics update on the CPU: per feature of acts [n, f] (float32, bfloat16 or
 * float16), over the rows where valid is true, the same Moments as moments.py's batch_moments:
 * finite count, NaN/Inf count, active count and sum (x > threshold), sum and sum of squares of
 * (x - shift[i]) in float64, and float32 min / max of the finite values.
 *
 * Why C: the reduction runs down the rows, a whole feature row apart. Inductor's code walks
 * that stride one block of 16 columns at a time, which runs at memory latency on CPUs whose
 * prefetchers do not follow strides across pages (Intel Xeon: 7-15x a read). Here the columns
 * are cut into tiles; each tile's rows are streamed contiguously, four rows per sweep, while
 * the tile's accumulators stay in L1/L2. Threads take whole tiles.
 *
 * For the top-activating examples the same pass can also keep, per sequence (`tokens` rows
 * each) and feature, the largest finite value above the threshold and the earliest token
 * holding it (examples.c's featmon_row_max, without a second read of acts).
 *
 * Built with -O3 -fno-trapping-math (so gcc if-converts the float compares) the sweep is
 * vectorized; selects, not 0/1 multiplies, keep NaN out of the sums. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featmon_protocol.h" /* DTYPE_*, ACT_*, VECTOR_CLONES, this file's prototype */

enum { TILE = 1024, ROWS = 4, MAX_THREADS = 16 };
#ifndef COUNT_ROWS /* a test builds it with a small one */
#define COUNT_ROWS ((int64_t)1 << 30)
#endif

/* A tile's running sums; counts are int32 (one vector op per 16 values; folded into the
 * int64 outputs every COUNT_ROWS rows). best / arg: the current sequence's row maxima (-inf /
 * -1 where none yet). */
typedef struct {
    int32_t *count, *active;
    double *active_sum, *s1, *s2;
    float *min, *max, *best;
    int32_t *arg;
} Acc;

/* One value of token t into column i's sums (and its row maximum when `track`). */
#define FOLD(v, t)                                                         \
    do {                                                                   \
        const float v_ = (v);                                              \
        const int ok = (v_ - v_) == 0.0f; /* finite */                     \
        const double x = (double)v_;                                       \
        const double d = ok ? x - sh : 0.0;                                \
        const int on = ok & (v_ > tf);                                     \
        c += ok;                                                           \
        a += on;                                                           \
        as += on ? x : 0.0;                                                \
        s1 += d;                                                           \
        s2 += d * d;                                                       \
        lo = (ok & (v_ < lo)) ? v_ : lo;                                   \
        hi = (ok & (v_ > hi)) ? v_ : hi;                                   \
        if (tracking) { /* a constant: compiled away when 0 */             \
            const int take = on & (v_ > bst); /* later equal values lose */ \
            bst = take ? v_ : bst;                                         \
            ag = take ? (t) : ag;                                          \
        }                                                                  \
    } while (0)

/* Column i's sums into registers, and back. */
#define SWEEP_LOAD                                                                           \
    const double sh = shift[i];                                                              \
    int32_t c = count[i], a = active[i];                                                     \
    double as = active_sum[i], s1 = sum1[i], s2 = sum2[i];                                   \
    float lo = mn[i], hi = mx[i], bst = tracking ? best[i] : 0.0f;                           \
    int32_t ag = tracking ? arg[i] : 0
#define SWEEP_STORE                                                                          \
    count[i] = c, active[i] = a, active_sum[i] = as, sum1[i] = s1, sum2[i] = s2;             \
    mn[i] = lo, mx[i] = hi;                                                                  \
    if (tracking) best[i] = bst, arg[i] = ag

/* The SAE activation the statistics pass can apply in place (our own float32 SAEs): none, or
 * JumpReLU as SAELens writes it, relu(v) * (v > jump), with torch's result for every input:
 * NaN stays NaN, +inf whose mask is 0 becomes NaN (inf * 0), everything else not above both 0
 * and jump becomes 0. A plain ReLU is JumpReLU with jump = -inf.
 *
 * Written on the bits: with any float ?: (or a multiply by the mask) gcc threaded the value
 * ranges it could prove into the sums below and left the four-row sweep scalar. */
static inline float jump_relu(float v, float jump) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    const uint32_t keep = 0u - (uint32_t)(((v > 0.0f) & (v > jump)) | (v != v));
    const uint32_t to_nan = 0u - (uint32_t)((v == INFINITY) & !(v > jump));
    bits = (bits & keep) | (to_nan & 0x7FC00000u);
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
#define ACTIVATE(act, v, jump) ((act) == ACT_JUMP ? jump_relu((v), (jump)) : (v))
#define STORE_F32(p, v) (*(p) = (v))
#define STORE_NONE(p, v) ((void)0)

/* Row r's value in column i: loaded, activated (and written back) when `act`, and folded. */
#define STEP(r, t, load, store, act)                                                         \
    do {                                                                                     \
        float v_in = load(r[i]);                                                             \
        if (act != ACT_NONE) {                                                               \
            v_in = ACTIVATE(act, v_in, jump[i]);                                             \
            store(r + i, v_in);                                                              \
        }                                                                                    \
        FOLD(v_in, t);                                                                       \
    } while (0)

/* Rows r0..r3 (tokens t0..t3, in order) into the tile's n columns; `rows` is 4, or 1 for r0
 * alone. */
#define SWEEP(name, type, load, store, track, act)                                           \
    VECTOR_CLONES static void name(                                                          \
        type *restrict r0, type *restrict r1, type *restrict r2, type *restrict r3,          \
        int32_t t0, int32_t t1, int32_t t2, int32_t t3, int rows, int64_t n,                 \
        const double *restrict shift, float tf, const float *restrict jump,                  \
        int32_t *restrict count, int32_t *restrict active, double *restrict active_sum,      \
        double *restrict sum1, double *restrict sum2, float *restrict mn,                    \
        float *restrict mx, float *restrict best, int32_t *restrict arg) {                   \
        const int tracking = track;                                                          \
        (void)jump;                                                                          \
        if (rows == ROWS) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                \
                SWEEP_LOAD;                                                                  \
                STEP(r0, t0, load, store, act);                                                                \
                STEP(r1, t1, load, store, act);                                                                \
                STEP(r2, t2, load, store, act);                                                                \
                STEP(r3, t3, load, store, act);                                                                \
                SWEEP_STORE;                                                                 \
            }                                                                                \
            return;                                                                          \
        }                                                                                    \
        for (int64_t i = 0; i < n; i++) {                                                    \
            SWEEP_LOAD;                                                                      \
            STEP(r0, t0, load, store, act);                                                                    \
            SWEEP_STORE;                                                                     \
        }                                                                                    \
    }

#define LOAD_F32(v) (v)
SWEEP(sweep_f32, float, LOAD_F32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_bf16, uint16_t, featmon_bf16_to_f32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_f16, uint16_t, featmon_f16_to_f32, STORE_NONE, 0, ACT_NONE)
SWEEP(sweep_f32_max, float, LOAD_F32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_bf16_max, uint16_t, featmon_bf16_to_f32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_f16_max, uint16_t, featmon_f16_to_f32, STORE_NONE, 1, ACT_NONE)
SWEEP(sweep_f32_jump, float, LOAD_F32, STORE_F32, 0, ACT_JUMP)
SWEEP(sweep_f32_jump_max, float, LOAD_F32, STORE_F32, 1, ACT_JUMP)

typedef void (*SweepFn)(void *, void *, void *, void *, int32_t, int32_t, int32_t, int32_t, int,
                        int64_t, const double *, float, const float *, int32_t *, int32_t *,
                        double *, double *, double *, float *, float *, float *, int32_t *);

/* [act][track][dtype]; activations only for float32 (NULL elsewhere: refused up front). */
static SweepFn sweep_for(int act, int track, int dtype) {
    static const SweepFn table[2][2][3] = {
        [ACT_NONE] = {{[DTYPE_F32] = (SweepFn)sweep_f32, [DTYPE_BF16] = (SweepFn)sweep_bf16,
                       [DTYPE_F16] = (SweepFn)sweep_f16},
                      {[DTYPE_F32] = (SweepFn)sweep_f32_max,
                       [DTYPE_BF16] = (SweepFn)sweep_bf16_max,
                       [DTYPE_F16] = (SweepFn)sweep_f16_max}},
        [ACT_JUMP] = {{[DTYPE_F32] = (SweepFn)sweep_f32_jump},
                      {[DTYPE_F32] = (SweepFn)sweep_f32_jump_max}}};
    return table[act][track][dtype];
}

typedef struct {
    void *acts; /* written in place when act != ACT_NONE */
    int dtype, act;
    const float *jump; /* [f] JumpReLU thresholds (ACT_JUMP; -inf: ReLU) */
    const int64_t *rows; /* the valid rows, in order */
    int64_t n_valid, f, tokens, batch, begin, end; /* tiles [begin, end) */
    const double *shift;
    float tf;
    int64_t *count, *nan_count, *active_count;
    double *active_sum, *s1, *s2, *min, *max;
    float *best; /* [batch, f], or NULL: no row maxima */
    int32_t *arg;
    int failed;
} Work;

/* The tile's row maxima of sequences [from, to) into the outputs (none seen: -inf / -1), and
 * the tile's trackers reset for the next sequence. */
static void flush_maxima(const Work *w, Acc *acc, int64_t start, int64_t n, int64_t from,
                         int64_t to) {
    for (int64_t b = from; b < to; b++) {
        float *best = w->best + b * w->f + start;
        int32_t *arg = w->arg + b * w->f + start;
        memcpy(best, acc->best, (size_t)n * sizeof *best);
        memcpy(arg, acc->arg, (size_t)n * sizeof *arg);
        if (b == from)
            for (int64_t i = 0; i < n; i++) acc->best[i] = -INFINITY, acc->arg[i] = -1;
    }
}

/* The tile's int32 counts added into the int64 outputs, and zeroed. */
static void flush_counts(const Work *w, Acc *acc, int64_t start, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        w->count[start + i] += acc->count[i];
        w->active_count[start + i] += acc->active[i];
        acc->count[i] = acc->active[i] = 0;
    }
}

static void *run_tiles(void *p) {
    Work *w = p;
    /* One allocation for a tile's sums, reused across this thread's tiles. */
    double *sums = malloc((size_t)TILE * (3 * sizeof(double) + 6 * sizeof(float)));
    if (!sums) {
        w->failed = 1;
        return NULL;
    }
    float *f32 = (float *)(sums + 3 * TILE);
    Acc acc = {(int32_t *)(f32 + 4 * TILE), (int32_t *)(f32 + 5 * TILE), sums, sums + TILE,
               sums + 2 * TILE, f32, f32 + TILE, f32 + 2 * TILE, (int32_t *)(f32 + 3 * TILE)};
    const int track = w->best != NULL;
    const SweepFn sweep = sweep_for(w->act, track, w->dtype);
    const size_t width = w->dtype == DTYPE_F32 ? 4 : 2;
    char *base = w->acts;
    for (int64_t tile = w->begin; tile < w->end; tile++) {
        const int64_t start = tile * TILE, n = w->f - start < TILE ? w->f - start : TILE;
        memset(sums, 0, (size_t)TILE * 3 * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            acc.count[i] = acc.active[i] = 0;
            w->count[start + i] = w->active_count[start + i] = 0;
            acc.min[i] = INFINITY, acc.max[i] = -INFINITY;
            acc.best[i] = -INFINITY, acc.arg[i] = -1;
        }
        const double *shift = w->shift + start;
        int64_t done = 0; /* sequences whose maxima are written */
        /* Four rows per sweep (of one sequence when tracking), the rest one at a time. */
        for (int64_t j = 0; j < w->n_valid;) {
            const int64_t seq = w->rows[j] / w->tokens;
            if (track && seq > done) {
                flush_maxima(w, &acc, start, n, done, seq); /* done .. seq-1 are complete */
                done = seq;
            }
            int rows = w->n_valid - j >= ROWS ? ROWS : 1;
            if (track && rows == ROWS && w->rows[j + ROWS - 1] / w->tokens != seq) rows = 1;
            void *r[ROWS];
            int32_t t[ROWS];
            for (int q = 0; q < ROWS; q++) {
                const int64_t row = w->rows[j + (q < rows ? q : 0)];
                r[q] = base + ((size_t)row * (size_t)w->f + (size_t)start) * width;
                t[q] = (int32_t)(row % w->tokens);
            }
            if (j / COUNT_ROWS != (j + rows) / COUNT_ROWS) flush_counts(w, &acc, start, n);
            j += rows;
            sweep(r[0], r[1], r[2], r[3], t[0], t[1], t[2], t[3], rows, n, shift, w->tf,
                  w->jump ? w->jump + start : NULL, acc.count, acc.active, acc.active_sum, acc.s1, acc.s2, acc.min, acc.max,
                  acc.best, acc.arg);
        }
        if (track) flush_maxima(w, &acc, start, n, done, w->batch);
        flush_counts(w, &acc, start, n);
        for (int64_t i = 0; i < n; i++) {
            w->nan_count[start + i] = w->n_valid - w->count[start + i];
            w->active_sum[start + i] = acc.active_sum[i];
            w->s1[start + i] = acc.s1[i];
            w->s2[start + i] = acc.s2[i];
            w->min[start + i] = acc.min[i];
            w->max[start + i] = acc.max[i];
        }
    }
    free(sums);
    return NULL;
}

/* The largest float32 t with (x > t) == (x > threshold) for every float32 x. */
static float float_threshold(double threshold) {
    if (threshold != threshold) return NAN; /* nothing is above NaN */
    if (threshold >= 3.4028234663852886e38) return 3.4028234663852886e38f;
    if (threshold < -3.4028234663852886e38) return -INFINITY;
    float t = (float)threshold;
    if ((double)t > threshold) t = nextafterf(t, -INFINITY);
    return t;
}

/* The activation alone on the rows the statistics skip (padding), so every row of acts
 * holds features afterwards. */
static void activate_invalid_rows(float *acts, const uint8_t *valid, int64_t n, int64_t f,
                                  int act, const float *jump) {
    for (int64_t row = 0; row < n; row++) {
        if (valid[row]) continue;
        float *x = acts + row * f;
        for (int64_t i = 0; i < f; i++) x[i] = ACTIVATE(act, x[i], jump[i]);
    }
}

/* acts: [n, f] row-major, dtype DTYPE_F32 / DTYPE_BF16 / DTYPE_F16; valid: [n] bytes or NULL (every row);
 * shift: [f] float64; outputs [f] each. rows_buf: [n] int64 scratch. With best / arg
 * ([n / tokens, f] float32 / int32; NULL for none) the row maxima of each sequence of `tokens`
 * rows too (-inf / -1 where no valid value is above the threshold). With act = ACT_JUMP
 * (jump [f]; float32 only) acts holds pre-activations and is overwritten with the activated
 * features, whose statistics these are. Returns 0; -1 if a buffer could not be
 * allocated (the outputs are then incomplete); -2 for an activation on 16-bit input. */
int featmon_dense_moments(void *acts, int dtype, const uint8_t *valid, int64_t n, int64_t f,
                          const double *shift, double threshold, int64_t *rows_buf,
                          int64_t *count, int64_t *nan_count, int64_t *active_count,
                          double *active_sum, double *s1, double *s2, double *min, double *max,
                          int64_t tokens, float *best, int32_t *arg, int act, const float *jump,
                          int threads) {
    if (act != ACT_NONE && (act != ACT_JUMP || dtype != DTYPE_F32 || !jump)) return -2;
    int64_t n_valid = 0;
    for (int64_t row = 0; row < n; row++)
        if (!valid || valid[row]) rows_buf[n_valid++] = row;
    if (act != ACT_NONE && valid) activate_invalid_rows(acts, valid, n, f, act, jump);
    if (tokens < 1) tokens = n > 0 ? n : 1;
    const int64_t tiles = (f + TILE - 1) / TILE;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > tiles) threads = (int)tiles;
    if (threads < 1) threads = 1;
    Work work[MAX_THREADS];
    for (int k = 0; k < threads; k++)
        work[k] = (Work){acts, dtype, act, jump, rows_buf, n_valid, f, tokens, n / tokens,
                         tiles * k / threads, tiles * (k + 1) / threads, shift,
                         float_threshold(threshold), count, nan_count, active_count,
                         active_sum, s1, s2, min, max, best, arg, 0};
    int failed = 0;
#ifdef _OPENMP
    /* Built with -fopenmp and loaded next to torch, this is torch's own OpenMP runtime (same
     * soname): its workers, still spinning after the forward's last parallel op, take the
     * tiles at once. Fresh pthreads waited behind them for a scheduler slice. */
#pragma omp parallel for num_threads(threads) schedule(static, 1) reduction(| : failed)
    for (int k = 0; k < threads; k++) {
        run_tiles(&work[k]);
        failed |= work[k].failed;
    }
#else
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    /* Thread 0's share runs here; a thread that cannot start runs here too. */
    for (int k = 1; k < threads; k++)
        started[k] = pthread_create(&ids[k], NULL, run_tiles, &work[k]) == 0;
    run_tiles(&work[0]);
    failed = work[0].failed;
    for (int k = 1; k < threads; k++) {
        if (started[k])
            pthread_join(ids[k], NULL);
        else
            run_tiles(&work[k]);
        failed |= work[k].failed;
    }
#endif
    return failed ? -1 : 0;
}
