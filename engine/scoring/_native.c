/* The C kernel of engine.scoring: per block pair, the statistic, the cutoff test, exact
   scoring and the per-row top-k insert fused into one pass per direction. The statistic,
   cutoff, floor and key layout mirror engine/scoring/_bounds.py. Inputs are the float32 logits
   of one block pair (x: I towards J, y: J towards I, both [a, b] = users I_a, J_b) before the
   biases, which are added here.

   Built when the package is installed (setuptools ext-modules in pyproject.toml), so no
   compiler is needed at run time. It is a CPython extension module only so that the import
   system finds and loads the built file; Python calls scan_rows and scan_cols through ctypes,
   which releases the GIL for the scans. The kernel itself is in _scan.h, compiled twice (see
   below), so one portable wheel still runs AVX2/FMA code where the CPU has it: that alone is
   a factor of about four on the statistic pass that dominates (docs/decisions.md, D22). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HARMONIC 0
#define GEOMETRIC 1
#define MIN 2
#define PRODUCT 3
#define NO_CUT 3.1691265005705735e29f /* 2**98: no threshold yet */
#define T_SLACK 2.384185791015625e-07 /* 2**-22 */
#define STAT_SLACK 3.814697265625e-06 /* 2**-18 */
#define LOW32 0xFFFFFFFFLL
#define SPAN 64 /* entries screened together before any is looked at alone */

typedef struct {
    const float *bias; /* (rows,) float32 */
    int64_t n;         /* real users */
    int64_t *run;      /* (rows, k) keys, descending, -1 = empty */
    float *cut;        /* (rows,) statistic cutoff per row */
    const int64_t *ecount; /* (rows,) excluded partners per row */
    int64_t k;
    int32_t combine;
    const float *ta, *tb; /* tangent lines a - b d under log(1 + exp(-d)), 4 each */
    double gap;           /* how far the statistic may undershoot */
    const int64_t *excl;  /* sorted keys i * n + j of excluded pairs */
    int64_t n_excl;
    const int64_t *label; /* (n,) the caller's index of each column: keys and ties use it */
} state_t;

/* One copy of the kernel for x86-64-v3 (AVX2, FMA), where GCC can compile one, and one for the
   baseline the wheel was built for; the entry points pick one when the library is loaded. The
   whole kernel is compiled per variant (not only the entry points), so its helpers are too. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_V3 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define VARIANT(name) name##_v3
#include "_scan.h"
#undef VARIANT
#pragma GCC pop_options
#endif

#define VARIANT(name) name##_base
#include "_scan.h"
#undef VARIANT

typedef void (*scan_rows_fn)(const float *, const float *, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int32_t, const state_t *, float *, float *);
typedef void (*scan_cols_fn)(const float *, const float *, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, const state_t *, float *);
static scan_rows_fn rows_impl = scan_rows_base;
static scan_cols_fn cols_impl = scan_cols_base;
static int32_t isa_level = 1;

__attribute__((constructor)) static void pick_variant(void) {
#ifdef HAVE_V3
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        rows_impl = scan_rows_v3;
        cols_impl = scan_cols_v3;
        isa_level = 3;
    }
#endif
}

/* The layout of state_t; engine/scoring/_native.py refuses a kernel built for another. */
int32_t kernel_abi(void) { return 2; }

/* The x86-64 microarchitecture level the scans run at: 3 (AVX2 and FMA) or 1 (baseline). */
int32_t kernel_isa(void) { return isa_level; }

/* Rows i0 + a, a in [a_lo, a_hi), against columns j0 + b, b in [0, b_end). */
void scan_rows(const float *x, const float *y, int64_t B, int64_t a_lo, int64_t a_hi,
               int64_t b_end, int64_t i0, int64_t j0, int32_t diag, const state_t *st,
               float *buf, float *tmp) {
    rows_impl(x, y, B, a_lo, a_hi, b_end, i0, j0, diag, st, buf, tmp);
}

/* Rows j0 + b, b in [b_lo, b_hi), against columns i0 + a, a in [0, a_end). */
void scan_cols(const float *x, const float *y, int64_t B, int64_t b_lo, int64_t b_hi,
               int64_t a_end, int64_t i0, int64_t j0, const state_t *st, float *buf) {
    cols_impl(x, y, B, b_lo, b_hi, a_end, i0, j0, st, buf);
}

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel",
    "The scoring kernel's shared object; engine.scoring calls it through ctypes.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
