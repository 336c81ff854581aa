/* The scanning kernel of _native.c, included once per instruction set it is compiled for.
   The includer defines VARIANT(name) to give this copy's functions their own names, and the
   types and constants these functions use. */

static inline float VARIANT(lower_softplus)(float d, const float *restrict ta, const float *restrict tb) {
    float h = ta[0] - tb[0] * d;
    h = h > 0.0f ? h : 0.0f;
    for (int i = 1; i < 4; i++) {
        float v = ta[i] - tb[i] * d;
        h = v > h ? v : h;
    }
    return h;
}

/* out[t] = statistic of the logits (x[t] + bx, y[t] + by[t]); branch-free so it vectorises. */
static inline void VARIANT(stats)(const float *restrict x, const float *restrict y, float bx,
                  const float *restrict by, int64_t w, const state_t *st, float *restrict out) {
    const float *restrict ta = st->ta, *restrict tb = st->tb;
    if (st->combine == HARMONIC) {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            float m = p < q ? p : q;
            out[t] = VARIANT(lower_softplus)(fabsf(p - q), ta, tb) - m;
        }
    } else if (st->combine == MIN) {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            out[t] = -(p < q ? p : q);
        }
    } else {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            float rp = p < 0.0f ? -p : 0.0f, rq = q < 0.0f ? -q : 0.0f;
            out[t] = rp + rq + VARIANT(lower_softplus)(fabsf(p), ta, tb) + VARIANT(lower_softplus)(fabsf(q), ta, tb);
        }
    }
}

static inline float VARIANT(score)(float p, float q, int combine) {
    double u = exp(-(double)p), v = exp(-(double)q);
    double s;
    switch (combine) {
    case HARMONIC: s = 2.0 / (2.0 + u + v); break;
    case MIN: s = 1.0 / (1.0 + (u > v ? u : v)); break;
    case PRODUCT: s = 1.0 / ((1.0 + u) * (1.0 + v)); break;
    default: s = 1.0 / sqrt((1.0 + u) * (1.0 + v)); break;
    }
    return (float)s;
}

/* The statistic an entry must stay below to possibly score above thr: log T(t) with T the
   ratio below. T is formed in double, its log taken in float (off by well under the slack). */
static float VARIANT(cutoff)(double thr, int combine) {
    double t = thr * (1.0 - T_SLACK);
    if (!(t > 0.0)) return NO_CUT;
    if (t > 1.0) t = 1.0;
    double r;
    switch (combine) {
    case HARMONIC: r = 2.0 * (1.0 - t) / t; break;
    case PRODUCT: r = 1.0 / t; break;
    case GEOMETRIC: r = 1.0 / (t * t); break;
    default: r = (1.0 - t) / t; break;
    }
    double c = (double)logf((float)r);
    c += STAT_SLACK * (1.0 + fabs(c));
    return c < (double)NO_CUT ? (float)c : NO_CUT;
}

/* A score every entry whose statistic is z exceeds (0 if none is implied). */
static double VARIANT(floor_of)(float z, int combine, double gap) {
    double zz = z;
    if (!(zz < (double)NO_CUT)) return 0.0;
    double lt = zz + gap + STAT_SLACK * (1.0 + fabs(zz));
    double big = exp(lt), low;
    switch (combine) {
    case HARMONIC: low = 2.0 / (2.0 + big); break;
    case PRODUCT: low = 1.0 / big; break;
    case GEOMETRIC: low = exp(-0.5 * lt); break;
    default: low = 1.0 / (1.0 + big); break;
    }
    return low * (1.0 - T_SLACK);
}

/* Keep the `cap` smallest values seen in a max-heap h (h[0] the largest kept). */
static void VARIANT(keep_smallest)(float *h, int64_t *len, int64_t cap, float v) {
    int64_t i;
    if (*len < cap) {
        i = (*len)++;
        while (i > 0 && h[(i - 1) / 2] < v) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = v;
        return;
    }
    if (!(v < h[0])) return;
    i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= cap) break;
        if (c + 1 < cap && h[c + 1] > h[c]) c++;
        if (!(h[c] > v)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

/* A row without a full list takes a cutoff from one block: of its (k + e) smallest
   statistics, at least k belong to entries that are not excluded, and each of those scores
   above floor_of(the largest of them). */
static float VARIANT(seeded)(float cut, const float *h, int64_t len, int64_t need, const state_t *st) {
    if (len < need) return cut;
    double low = VARIANT(floor_of)(h[0], st->combine, st->gap);
    if (!(low > 0.0)) return cut;
    float c = VARIANT(cutoff)(low, st->combine);
    return c < cut ? c : cut;
}

static inline int64_t VARIANT(make_key)(float s, int64_t col) {
    int32_t bits;
    memcpy(&bits, &s, sizeof bits);
    return ((int64_t)bits << 32) | (LOW32 - col);
}

static int VARIANT(excluded)(const state_t *st, int64_t pair) {
    int64_t lo = 0, hi = st->n_excl;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (st->excl[mid] < pair) lo = mid + 1;
        else hi = mid;
    }
    return lo < st->n_excl && st->excl[lo] == pair;
}

/* Offer one scored entry to a row's list; returns the row's (possibly lower) cutoff. */
static float VARIANT(offer)(const state_t *st, int64_t row, int64_t col, float s, float cut) {
    int64_t k = st->k, *run = st->run + row * k;
    int64_t key = VARIANT(make_key)(s, st->label[col]);
    if (key <= run[k - 1]) return cut;
    if (st->n_excl && VARIANT(excluded)(st, row * st->n + col)) return cut;
    int64_t p = k - 1;
    while (p > 0 && run[p - 1] < key) {
        run[p] = run[p - 1];
        p--;
    }
    run[p] = key;
    if (run[k - 1] < 0) return cut;
    float kth;
    int32_t bits = (int32_t)(run[k - 1] >> 32);
    memcpy(&kth, &bits, sizeof kth);
    float c = VARIANT(cutoff)(kth, st->combine);
    return c < cut ? c : cut;
}

/* Rows i0 + a, a in [a_lo, a_hi), against columns j0 + b, b in [0, b_end). */
static void VARIANT(scan_rows)(const float *x, const float *y, int64_t B, int64_t a_lo, int64_t a_hi,
               int64_t b_end, int64_t i0, int64_t j0, int32_t diag, const state_t *st,
               float *buf, float *tmp) {
    /* tmp holds a heap of (k + e) floats; the caller sizes it for the largest such need. */
    const float *by = st->bias + j0;
    for (int64_t a = a_lo; a < a_hi; a++) {
        int64_t row = i0 + a;
        const float *xr = x + a * B, *yr = y + a * B;
        float bx = st->bias[row];
        VARIANT(stats)(xr, yr, bx, by, b_end, st, buf);
        if (diag) buf[a] = NO_CUT * 4.0f;
        float c = st->cut[row];
        int64_t need = st->k + st->ecount[row];
        if (st->run[row * st->k + st->k - 1] < 0 && need <= b_end) {
            int64_t len = 0;
            for (int64_t b = 0; b < b_end; b++) VARIANT(keep_smallest)(tmp, &len, need, buf[b]);
            c = VARIANT(seeded)(c, tmp, len, need, st);
        }
        for (int64_t b0 = 0; b0 < b_end; b0 += SPAN) {
            int64_t e = b0 + SPAN < b_end ? b0 + SPAN : b_end;
            int any = 0;
            for (int64_t b = b0; b < e; b++) any |= buf[b] < c;
            if (!any) continue;
            for (int64_t b = b0; b < e; b++)
                if (buf[b] < c) c = VARIANT(offer)(st, row, j0 + b, VARIANT(score)(xr[b] + bx, yr[b] + by[b], st->combine), c);
        }
        st->cut[row] = c;
    }
}

/* Rows j0 + b, b in [b_lo, b_hi), against columns i0 + a, a in [0, a_end): the block read
   down its columns, one row-major strip at a time. Rows without a full list are first seeded
   from their whole column. */
static void VARIANT(scan_cols)(const float *x, const float *y, int64_t B, int64_t b_lo, int64_t b_hi,
               int64_t a_end, int64_t i0, int64_t j0, const state_t *st, float *buf) {
    int64_t w = b_hi - b_lo, k = st->k, fresh = 0;
    const float *by = st->bias + j0 + b_lo;
    float *cut = st->cut + j0 + b_lo;
    int64_t total = 0;
    for (int64_t t = 0; t < w; t++) {
        int64_t need = k + st->ecount[j0 + b_lo + t];
        if (st->run[(j0 + b_lo + t) * k + k - 1] < 0 && need <= a_end) {
            fresh++;
            total += need;
        }
    }
    if (fresh) {
        /* Seed those rows' cutoffs from their whole column, one heap per column. */
        int64_t *which = malloc((size_t)fresh * 3 * sizeof *which);
        float *heaps = malloc((size_t)total * sizeof *heaps);
        if (which && heaps) {
            int64_t *need = which + fresh, *len = which + 2 * fresh, f = 0, at = 0;
            for (int64_t t = 0; t < w; t++) {
                int64_t nd = k + st->ecount[j0 + b_lo + t];
                if (st->run[(j0 + b_lo + t) * k + k - 1] < 0 && nd <= a_end) {
                    which[f] = t;
                    need[f] = nd;
                    len[f] = 0;
                    f++;
                }
            }
            for (int64_t a = 0; a < a_end; a++) {
                VARIANT(stats)(x + a * B + b_lo, y + a * B + b_lo, st->bias[i0 + a], by, w, st, buf);
                at = 0;
                for (f = 0; f < fresh; f++) {
                    VARIANT(keep_smallest)(heaps + at, len + f, need[f], buf[which[f]]);
                    at += need[f];
                }
            }
            at = 0;
            for (f = 0; f < fresh; f++) {
                cut[which[f]] = VARIANT(seeded)(cut[which[f]], heaps + at, len[f], need[f], st);
                at += need[f];
            }
        }
        free(which);
        free(heaps);
    }
    for (int64_t a = 0; a < a_end; a++) {
        const float *xr = x + a * B + b_lo, *yr = y + a * B + b_lo;
        float bx = st->bias[i0 + a];
        VARIANT(stats)(xr, yr, bx, by, w, st, buf);
        for (int64_t t0 = 0; t0 < w; t0 += SPAN) {
            int64_t e = t0 + SPAN < w ? t0 + SPAN : w;
            int any = 0;
            for (int64_t t = t0; t < e; t++) any |= buf[t] < cut[t];
            if (!any) continue;
            for (int64_t t = t0; t < e; t++)
                if (buf[t] < cut[t])
                    cut[t] = VARIANT(offer)(st, j0 + b_lo + t, i0 + a, VARIANT(score)(xr[t] + bx, yr[t] + by[t], st->combine), cut[t]);
        }
    }
}
