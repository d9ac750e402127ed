/*
 * The two passes of a ReLU, leaky ReLU or absolute-value node of the
 * layer-major sweep, vectorized (AVX-512, AVX2) with a scalar path.
 *
 * Same operations as dalverify/accel/fused_step.py, so the same bits: per
 * unit, root = (-a) / (b + 0.0) by IEEE negation, addition and division;
 * "inside" is root > start and root < end; the unit is on when
 * (not root > z) differs from (b < 0); comparisons with NaN are false. The
 * outputs are a or 0.0 (ReLU), a or slope * a (leaky), a or -a (abs), for
 * both rows. Every path performs these operations one for one, with no
 * contraction (the file is compiled with -ffp-contract=off).
 *
 * The rows of segment s are x[s, 0] (alpha) and x[s, 1] (beta) of a C-contiguous
 * float64 array x of shape (n, 2, units).
 *
 * count_inside(x, starts, ends, counts): counts[s] = number of units of
 *     segment s whose root lies strictly inside (starts[s], ends[s]).
 * apply(x, parent, starts, ends, out, bits, bound): segment k takes the rows
 *     of parent[k]; writes out (m, 2, units), the pattern bits (m, units,
 *     one byte each) and bound[k], the number of units whose root equals
 *     ends[k].
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DV_X86 1
#include <immintrin.h>
#else
#define DV_X86 0
#endif

enum { KIND_RELU = 0, KIND_LEAKY = 1, KIND_ABS = 2 };
enum { ISA_AUTO = 0, ISA_SCALAR = 1, ISA_AVX2 = 2, ISA_AVX512 = 3 };

static inline double root_of(double a, double b)
{
    return (-a) / (b + 0.0);
}

static inline double off_value(int kind, double slope, double a)
{
    return kind == KIND_RELU ? 0.0 : (kind == KIND_LEAKY ? slope * a : -a);
}


/* ---- scalar paths ---- */

static Py_ssize_t count_row_scalar(const double *a, const double *b, Py_ssize_t units, double lo, double hi)
{
    Py_ssize_t count = 0;
    for (Py_ssize_t u = 0; u < units; u++) {
        double r = root_of(a[u], b[u]);
        count += (r > lo) & (r < hi);
    }
    return count;
}

static Py_ssize_t apply_row_scalar(const double *a, const double *b, Py_ssize_t units, double z, double end, int kind,
                                   double slope, double *out_a, double *out_b, uint8_t *bits)
{
    Py_ssize_t count = 0;
    for (Py_ssize_t u = 0; u < units; u++) {
        double r = root_of(a[u], b[u]);
        int on = (!(r > z)) != (b[u] < 0);
        bits[u] = (uint8_t)on;
        count += r == end;
        out_a[u] = on ? a[u] : off_value(kind, slope, a[u]);
        out_b[u] = on ? b[u] : off_value(kind, slope, b[u]);
    }
    return count;
}


#if DV_X86

/* Eight pattern bytes (0 or 1) per 8-bit mask. */
static uint64_t byte_table[256];

static void fill_byte_table(void)
{
    for (int m = 0; m < 256; m++) {
        uint64_t word = 0;
        for (int l = 0; l < 8; l++)
            if (m & (1 << l))
                word |= (uint64_t)1 << (8 * l);
        byte_table[m] = word;
    }
}

__attribute__((target("avx512f")))
static Py_ssize_t count_row_avx512(const double *a, const double *b, Py_ssize_t units, double lo, double hi)
{
    const __m512d sign = _mm512_set1_pd(-0.0), zero = _mm512_setzero_pd();
    const __m512d vlo = _mm512_set1_pd(lo), vhi = _mm512_set1_pd(hi);
    Py_ssize_t count = 0, u = 0;
    for (; u + 8 <= units; u += 8) {
        __m512d va = _mm512_loadu_pd(a + u), vb = _mm512_loadu_pd(b + u);
        __m512d r = _mm512_div_pd(_mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(va), _mm512_castpd_si512(sign))),
                                  _mm512_add_pd(vb, zero));
        __mmask8 inside = _mm512_cmp_pd_mask(r, vlo, _CMP_GT_OQ) & _mm512_cmp_pd_mask(r, vhi, _CMP_LT_OQ);
        count += __builtin_popcount((unsigned)inside);
    }
    return count + count_row_scalar(a + u, b + u, units - u, lo, hi);
}

__attribute__((target("avx512f")))
static Py_ssize_t apply_row_avx512(const double *a, const double *b, Py_ssize_t units, double z, double end, int kind,
                                   double slope, double *out_a, double *out_b, uint8_t *bits)
{
    const __m512d sign = _mm512_set1_pd(-0.0), zero = _mm512_setzero_pd();
    const __m512d vz = _mm512_set1_pd(z), vend = _mm512_set1_pd(end), vslope = _mm512_set1_pd(slope);
    Py_ssize_t count = 0, u = 0;
    for (; u + 8 <= units; u += 8) {
        __m512d va = _mm512_loadu_pd(a + u), vb = _mm512_loadu_pd(b + u);
        __m512d na = _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(va), _mm512_castpd_si512(sign)));
        __m512d r = _mm512_div_pd(na, _mm512_add_pd(vb, zero));
        __mmask8 gt = _mm512_cmp_pd_mask(r, vz, _CMP_GT_OQ);
        __mmask8 neg = _mm512_cmp_pd_mask(vb, zero, _CMP_LT_OQ);
        __mmask8 on = (__mmask8)~(gt ^ neg);
        count += __builtin_popcount((unsigned)_mm512_cmp_pd_mask(r, vend, _CMP_EQ_OQ));
        __m512d off_a, off_b;
        if (kind == KIND_RELU) {
            off_a = zero;
            off_b = zero;
        } else if (kind == KIND_LEAKY) {
            off_a = _mm512_mul_pd(vslope, va);
            off_b = _mm512_mul_pd(vslope, vb);
        } else {
            off_a = na;
            off_b = _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(vb), _mm512_castpd_si512(sign)));
        }
        _mm512_storeu_pd(out_a + u, _mm512_mask_blend_pd(on, off_a, va));
        _mm512_storeu_pd(out_b + u, _mm512_mask_blend_pd(on, off_b, vb));
        memcpy(bits + u, &byte_table[on], 8);
    }
    return count + apply_row_scalar(a + u, b + u, units - u, z, end, kind, slope, out_a + u, out_b + u, bits + u);
}

__attribute__((target("avx2")))
static Py_ssize_t count_row_avx2(const double *a, const double *b, Py_ssize_t units, double lo, double hi)
{
    const __m256d sign = _mm256_set1_pd(-0.0), zero = _mm256_setzero_pd();
    const __m256d vlo = _mm256_set1_pd(lo), vhi = _mm256_set1_pd(hi);
    Py_ssize_t count = 0, u = 0;
    for (; u + 4 <= units; u += 4) {
        __m256d va = _mm256_loadu_pd(a + u), vb = _mm256_loadu_pd(b + u);
        __m256d r = _mm256_div_pd(_mm256_xor_pd(va, sign), _mm256_add_pd(vb, zero));
        __m256d inside = _mm256_and_pd(_mm256_cmp_pd(r, vlo, _CMP_GT_OQ), _mm256_cmp_pd(r, vhi, _CMP_LT_OQ));
        count += __builtin_popcount((unsigned)_mm256_movemask_pd(inside));
    }
    return count + count_row_scalar(a + u, b + u, units - u, lo, hi);
}

__attribute__((target("avx2")))
static Py_ssize_t apply_row_avx2(const double *a, const double *b, Py_ssize_t units, double z, double end, int kind,
                                 double slope, double *out_a, double *out_b, uint8_t *bits)
{
    const __m256d sign = _mm256_set1_pd(-0.0), zero = _mm256_setzero_pd();
    const __m256d vz = _mm256_set1_pd(z), vend = _mm256_set1_pd(end), vslope = _mm256_set1_pd(slope);
    Py_ssize_t count = 0, u = 0;
    for (; u + 4 <= units; u += 4) {
        __m256d va = _mm256_loadu_pd(a + u), vb = _mm256_loadu_pd(b + u);
        __m256d na = _mm256_xor_pd(va, sign);
        __m256d r = _mm256_div_pd(na, _mm256_add_pd(vb, zero));
        int gt = _mm256_movemask_pd(_mm256_cmp_pd(r, vz, _CMP_GT_OQ));
        int neg = _mm256_movemask_pd(_mm256_cmp_pd(vb, zero, _CMP_LT_OQ));
        int on = ~(gt ^ neg) & 0xF;
        count += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(r, vend, _CMP_EQ_OQ)));
        __m256d off_a, off_b;
        if (kind == KIND_RELU) {
            off_a = zero;
            off_b = zero;
        } else if (kind == KIND_LEAKY) {
            off_a = _mm256_mul_pd(vslope, va);
            off_b = _mm256_mul_pd(vslope, vb);
        } else {
            off_a = na;
            off_b = _mm256_xor_pd(vb, sign);
        }
        /* Lane l is on when bit l of `on` is set: expand the bits to lane masks. */
        __m256d keep = _mm256_castsi256_pd(_mm256_set_epi64x(-(long long)((on >> 3) & 1), -(long long)((on >> 2) & 1),
                                                             -(long long)((on >> 1) & 1), -(long long)(on & 1)));
        _mm256_storeu_pd(out_a + u, _mm256_blendv_pd(off_a, va, keep));
        _mm256_storeu_pd(out_b + u, _mm256_blendv_pd(off_b, vb, keep));
        uint32_t word = (uint32_t)(byte_table[on] & 0xFFFFFFFFu);
        memcpy(bits + u, &word, 4);
    }
    return count + apply_row_scalar(a + u, b + u, units - u, z, end, kind, slope, out_a + u, out_b + u, bits + u);
}

#endif /* DV_X86 */


/* Largest accepted n, m or units: their products with 16 then fit in Py_ssize_t. */
#define DIM_LIMIT ((Py_ssize_t)1 << 30)

/* a * b, or -1 when a factor is negative or the product exceeds PY_SSIZE_T_MAX (so -1 propagates). */
static Py_ssize_t mul(Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0 || b < 0 || (a != 0 && b > PY_SSIZE_T_MAX / a))
        return -1;
    return a * b;
}

static const char *isa_problem(int isa)
{
    if (isa < ISA_SCALAR || isa > ISA_AVX512)
        return "isa must be 0 (best available), 1 (scalar), 2 (AVX2) or 3 (AVX-512)";
    return NULL;
}

static int isa_supported(int isa)
{
    if (isa == ISA_SCALAR)
        return 1;
#if DV_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2)
        return __builtin_cpu_supports("avx2");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static int resolve_isa(int isa)
{
    if (isa != ISA_AUTO)
        return isa;
    if (isa_supported(ISA_AVX512))
        return ISA_AVX512;
    if (isa_supported(ISA_AVX2))
        return ISA_AVX2;
    return ISA_SCALAR;
}


static PyObject *py_count_inside(PyObject *self, PyObject *args)
{
    Py_buffer xb, sb, eb, cb;
    Py_ssize_t n, units;
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nni", &xb, &sb, &eb, &cb, &n, &units, &isa))
        return NULL;
    isa = resolve_isa(isa);
    const char *problem = isa_problem(isa);
    if (problem != NULL)
        ;
    else if (n < 0 || units < 0 || n > DIM_LIMIT || units > DIM_LIMIT)
        problem = "n and units must lie in 0..2**30";
    else if (mul(mul(n, units), 2 * (Py_ssize_t)sizeof(double)) < 0)
        problem = "the dimensions overflow the addressable size";
    else if (xb.len != mul(mul(n, units), 2 * (Py_ssize_t)sizeof(double)))
        problem = "x must hold n * 2 * units float64 values";
    else if (sb.len != (Py_ssize_t)sizeof(double) * n || eb.len != sb.len)
        problem = "starts and ends must hold n float64 values";
    else if (cb.len != (Py_ssize_t)sizeof(int64_t) * n)
        problem = "counts must hold n int64 values";
    else if (!isa_supported(isa))
        problem = "the requested instruction set is not available on this processor";
    if (problem == NULL) {
        const double *x = xb.buf, *starts = sb.buf, *ends = eb.buf;
        int64_t *counts = cb.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t s = 0; s < n; s++) {
            const double *ra = x + 2 * s * units, *rb = ra + units;
#if DV_X86
            if (isa == ISA_AVX512)
                counts[s] = count_row_avx512(ra, rb, units, starts[s], ends[s]);
            else if (isa == ISA_AVX2)
                counts[s] = count_row_avx2(ra, rb, units, starts[s], ends[s]);
            else
#endif
                counts[s] = count_row_scalar(ra, rb, units, starts[s], ends[s]);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&xb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&eb);
    PyBuffer_Release(&cb);
    if (problem != NULL) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}


static PyObject *py_apply(PyObject *self, PyObject *args)
{
    Py_buffer xb, pb, sb, eb, ob, tb, cb;
    Py_ssize_t n, m, units;
    int kind, isa;
    double slope;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*w*nnnidi", &xb, &pb, &sb, &eb, &ob, &tb, &cb, &n, &m, &units, &kind,
                          &slope, &isa))
        return NULL;
    isa = resolve_isa(isa);
    const char *problem = isa_problem(isa);
    int64_t *parent = NULL;
    if (problem != NULL)
        ;
    else if (n < 0 || m < 0 || units < 0 || n > DIM_LIMIT || m > DIM_LIMIT || units > DIM_LIMIT)
        problem = "n, m and units must lie in 0..2**30";
    else if (mul(mul(n, units), 2 * (Py_ssize_t)sizeof(double)) < 0 || mul(mul(m, units), 16) < 0)
        problem = "the dimensions overflow the addressable size";
    else if (xb.len != mul(mul(n, units), 2 * (Py_ssize_t)sizeof(double)))
        problem = "x must hold n * 2 * units float64 values";
    else if (pb.len != (Py_ssize_t)sizeof(int64_t) * m)
        problem = "parent must hold m int64 values";
    else if (sb.len != (Py_ssize_t)sizeof(double) * m || eb.len != sb.len)
        problem = "starts and ends must hold m float64 values";
    else if (ob.len != mul(mul(m, units), 2 * (Py_ssize_t)sizeof(double)))
        problem = "out must hold m * 2 * units float64 values";
    else if (tb.len != mul(m, units))
        problem = "bits must hold m * units bytes";
    else if (cb.len != (Py_ssize_t)sizeof(int64_t) * m)
        problem = "bound must hold m int64 values";
    else if (kind != KIND_RELU && kind != KIND_LEAKY && kind != KIND_ABS)
        problem = "kind must be 0 (relu), 1 (leaky relu) or 2 (abs)";
    else if (!isa_supported(isa))
        problem = "the requested instruction set is not available on this processor";
    if (problem == NULL) {
        /* A private copy, so that a buffer written below cannot change the indices after the check. */
        parent = malloc(sizeof(int64_t) * (m > 0 ? (size_t)m : 1));
        if (parent == NULL)
            problem = "out of memory for the parent index";
        else
            memcpy(parent, pb.buf, sizeof(int64_t) * (size_t)m);
    }
    for (Py_ssize_t k = 0; problem == NULL && k < m; k++)
        if (parent[k] < 0 || parent[k] >= n)
            problem = "a parent index points outside x";
    if (problem == NULL) {
        const double *x = xb.buf, *starts = sb.buf, *ends = eb.buf;
        double *out = ob.buf;
        uint8_t *bits = tb.buf;
        int64_t *bound = cb.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < m; k++) {
            const double *ra = x + 2 * parent[k] * units, *rb = ra + units;
            double *oa = out + 2 * k * units, *obeta = oa + units;
            uint8_t *row_bits = bits + k * units;
#if DV_X86
            if (isa == ISA_AVX512)
                bound[k] = apply_row_avx512(ra, rb, units, starts[k], ends[k], kind, slope, oa, obeta, row_bits);
            else if (isa == ISA_AVX2)
                bound[k] = apply_row_avx2(ra, rb, units, starts[k], ends[k], kind, slope, oa, obeta, row_bits);
            else
#endif
                bound[k] = apply_row_scalar(ra, rb, units, starts[k], ends[k], kind, slope, oa, obeta, row_bits);
        }
        Py_END_ALLOW_THREADS
    }
    free(parent);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&eb);
    PyBuffer_Release(&ob);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&cb);
    if (problem != NULL) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Py_RETURN_NONE;
}


static PyObject *py_instruction_sets(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *names = PyList_New(0);
    const char *labels[] = {"scalar", "avx2", "avx512"};
    for (int isa = ISA_SCALAR; names != NULL && isa <= ISA_AVX512; isa++) {
        if (!isa_supported(isa))
            continue;
        PyObject *name = PyUnicode_FromString(labels[isa - 1]);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_CLEAR(names);
            break;
        }
        Py_DECREF(name);
    }
    return names;
}


static PyMethodDef methods[] = {
    {"count_inside", py_count_inside, METH_VARARGS,
     "count_inside(x, starts, ends, counts, n, units, isa): roots strictly inside each segment."},
    {"apply", py_apply, METH_VARARGS,
     "apply(x, parent, starts, ends, out, bits, bound, n, m, units, kind, slope, isa): decide and\n"
     "write every unit of every new segment."},
    {"instruction_sets", py_instruction_sets, METH_NOARGS,
     "instruction_sets(): names of the paths this processor can run, slowest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pointwise", "Vectorized passes of the sweep's piecewise-linear element-wise nodes.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pointwise(void)
{
#if DV_X86
    fill_byte_table();
#endif
    return PyModule_Create(&module);
}
