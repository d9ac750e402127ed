/*
 * Float64 2-D cross-correlation as fused multiply-add chains.
 *
 * Contract (the same on every instruction set): each output is
 *
 *     acc = +0.0
 *     for c in the group's input channels, for i in kernel rows, for j in kernel columns:
 *         acc = fma(w[o, c, i, j], x_padded[b, c, y * sh + i * dh, x * sw + j * dw], acc)
 *
 * where fma rounds w * x + acc once, to nearest even. A fused multiply-add is
 * correctly rounded, so the scalar path (C99 fma), the AVX2 path and the
 * AVX-512 path give the same bits, and a batch element's outputs do not
 * depend on the other elements of the batch.
 *
 * Stride-1 layers take the vector paths. Their trick: over the zero-padded
 * plane of width Wp, output (y, x) sits at flat position q = y * Wp + x and
 * reads input q + i * dh * Wp + j * dw, so every kernel tap is one constant
 * offset and the positions run contiguously across rows. The kernel fills
 * the flat positions (including the Wp - out_w columns between rows that no
 * output keeps) and then copies the kept columns out.
 *
 * A constant term, when given, is added to the finished chain with one more
 * rounding, as the reference adds it to a finished convolution. An addend
 * map (a constant node that follows the convolution) is then added with one
 * more rounding.
 *
 * The module exposes conv2d_parts on buffers; the Python
 * wrapper dalverify.accel.fma_conv checks shapes and dtypes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DV_X86 1
#include <immintrin.h>
#else
#define DV_X86 0
#endif

enum { ISA_AUTO = 0, ISA_SCALAR = 1, ISA_AVX2 = 2, ISA_AVX512 = 3 };

/* Output channels computed together, and vectors of positions per strip. */
#define OUT_BLOCK 4
#define STRIP_VECTORS 2

enum { BIAS_NONE = 0, BIAS_ALL = 1, BIAS_EVEN = 2 };

typedef struct {
    Py_ssize_t batch, channels, height, width;
    Py_ssize_t out_channels, group_channels, kh, kw, groups;
    Py_ssize_t sh, sw, ph, pw, dh, dw, out_h, out_w;
    const double *bias;    /* out_channels values, or NULL */
    const double *addend;  /* out_channels * out_h * out_w values added after the bias, or NULL */
    int bias_mode;         /* BIAS_ALL, or BIAS_EVEN: odd rows get + 0.0 * bias and + 0.0 * addend */
} dims_t;


/* The constant term of row b, channel o: added after the chain, rounded once. */
static inline double row_bias(const dims_t *d, Py_ssize_t b, Py_ssize_t o)
{
    if (d->bias == NULL || d->bias_mode == BIAS_NONE)
        return 0.0;
    if (d->bias_mode == BIAS_EVEN && (b & 1))
        return 0.0 * d->bias[o];
    return d->bias[o];
}


/*
 * Write one plane of finished chains (row stride `stride`) to `dst` with the
 * constant terms: + bias, then + addend, each rounded, as the reference adds
 * a convolution's bias and then a following constant node.
 */
static void write_plane(const dims_t *d, Py_ssize_t b, Py_ssize_t o, const double *src, Py_ssize_t stride,
                        double *dst)
{
    Py_ssize_t h = d->out_h, w = d->out_w;
    if (d->bias == NULL && d->addend == NULL) {
        for (Py_ssize_t y = 0; y < h; y++)
            memcpy(dst + y * w, src + y * stride, sizeof(double) * w);
        return;
    }
    if (d->bias != NULL) {
        double shift = row_bias(d, b, o);
        for (Py_ssize_t y = 0; y < h; y++)
            for (Py_ssize_t x = 0; x < w; x++)
                dst[y * w + x] = src[y * stride + x] + shift;
        src = dst;
        stride = w;
    }
    if (d->addend != NULL) {
        const double *add = d->addend + o * h * w;
        int zero = d->bias_mode == BIAS_EVEN && (b & 1);
        for (Py_ssize_t y = 0; y < h; y++)
            for (Py_ssize_t x = 0; x < w; x++)
                dst[y * w + x] = src[y * stride + x] + (zero ? 0.0 * add[y * w + x] : add[y * w + x]);
    }
}

typedef struct {
    const double *plane;     /* padded input of one batch element, first channel of the group */
    Py_ssize_t plane_size;   /* Hp * Wp */
    Py_ssize_t group_channels;
    const Py_ssize_t *offsets; /* per tap, flat offset i * dh * Wp + j * dw */
    Py_ssize_t taps;
    const double *weights;   /* [block][channel][tap][OUT_BLOCK], zero beyond the last channel */
    double *flat;            /* [OUT_BLOCK][positions] */
    Py_ssize_t positions;    /* (out_h - 1) * Wp + out_w */
} plane_t;


/* ---- scalar path: any stride, reference for the vector paths ---- */

static void conv_scalar(const dims_t *d, const double *padded, Py_ssize_t hp, Py_ssize_t wp,
                        const double *weight, double *out, Py_ssize_t b)
{
    Py_ssize_t per_group = d->out_channels / d->groups;
    for (Py_ssize_t o = 0; o < d->out_channels; o++) {
        Py_ssize_t first = (o / per_group) * d->group_channels;
        for (Py_ssize_t y = 0; y < d->out_h; y++) {
            double *line = out + ((b * d->out_channels + o) * d->out_h + y) * d->out_w;
            for (Py_ssize_t x = 0; x < d->out_w; x++) {
                double acc = 0.0;
                for (Py_ssize_t c = 0; c < d->group_channels; c++) {
                    const double *plane = padded + (first + c) * hp * wp;
                    const double *w = weight + (o * d->group_channels + c) * d->kh * d->kw;
                    for (Py_ssize_t i = 0; i < d->kh; i++) {
                        const double *row = plane + (y * d->sh + i * d->dh) * wp + x * d->sw;
                        for (Py_ssize_t j = 0; j < d->kw; j++) {
                            acc = fma(w[i * d->kw + j], row[j * d->dw], acc);
                        }
                    }
                }
                line[x] = acc;
            }
        }
        double *dst = out + (b * d->out_channels + o) * d->out_h * d->out_w;
        write_plane(d, b, o, dst, d->out_w, dst);
    }
}


#if DV_X86

/* ---- AVX-512: 8 doubles per vector ---- */

__attribute__((target("avx512f")))
static void strips_avx512(const plane_t *p)
{
    const Py_ssize_t step = 8 * STRIP_VECTORS;
    for (Py_ssize_t q = 0; q < p->positions; q += step) {
        __mmask8 mask[STRIP_VECTORS];
        for (int u = 0; u < STRIP_VECTORS; u++) {
            Py_ssize_t left = p->positions - q - 8 * u;
            mask[u] = left >= 8 ? (__mmask8)0xFF : (left <= 0 ? (__mmask8)0 : (__mmask8)((1u << left) - 1u));
        }
        __m512d acc[OUT_BLOCK][STRIP_VECTORS];
        for (int k = 0; k < OUT_BLOCK; k++)
            for (int u = 0; u < STRIP_VECTORS; u++)
                acc[k][u] = _mm512_setzero_pd();
        const double *w = p->weights;
        for (Py_ssize_t c = 0; c < p->group_channels; c++) {
            const double *base = p->plane + c * p->plane_size + q;
            for (Py_ssize_t t = 0; t < p->taps; t++, w += OUT_BLOCK) {
                const double *src = base + p->offsets[t];
                __m512d v[STRIP_VECTORS];
                for (int u = 0; u < STRIP_VECTORS; u++)
                    v[u] = _mm512_maskz_loadu_pd(mask[u], src + 8 * u);
                for (int k = 0; k < OUT_BLOCK; k++) {
                    __m512d wk = _mm512_set1_pd(w[k]);
                    for (int u = 0; u < STRIP_VECTORS; u++)
                        acc[k][u] = _mm512_fmadd_pd(wk, v[u], acc[k][u]);
                }
            }
        }
        for (int k = 0; k < OUT_BLOCK; k++)
            for (int u = 0; u < STRIP_VECTORS; u++)
                _mm512_mask_storeu_pd(p->flat + k * p->positions + q + 8 * u, mask[u], acc[k][u]);
    }
}


/* ---- AVX2 + FMA: 4 doubles per vector ---- */

__attribute__((target("avx2,fma")))
static void strips_avx2(const plane_t *p)
{
    const Py_ssize_t step = 4 * STRIP_VECTORS;
    for (Py_ssize_t q = 0; q < p->positions; q += step) {
        __m256i mask[STRIP_VECTORS];
        for (int u = 0; u < STRIP_VECTORS; u++) {
            Py_ssize_t left = p->positions - q - 4 * u;
            long long lane[4];
            for (int l = 0; l < 4; l++)
                lane[l] = l < left ? -1 : 0;
            mask[u] = _mm256_set_epi64x(lane[3], lane[2], lane[1], lane[0]);
        }
        __m256d acc[OUT_BLOCK][STRIP_VECTORS];
        for (int k = 0; k < OUT_BLOCK; k++)
            for (int u = 0; u < STRIP_VECTORS; u++)
                acc[k][u] = _mm256_setzero_pd();
        const double *w = p->weights;
        for (Py_ssize_t c = 0; c < p->group_channels; c++) {
            const double *base = p->plane + c * p->plane_size + q;
            for (Py_ssize_t t = 0; t < p->taps; t++, w += OUT_BLOCK) {
                const double *src = base + p->offsets[t];
                __m256d v[STRIP_VECTORS];
                for (int u = 0; u < STRIP_VECTORS; u++)
                    v[u] = _mm256_maskload_pd(src + 4 * u, mask[u]);
                for (int k = 0; k < OUT_BLOCK; k++) {
                    __m256d wk = _mm256_set1_pd(w[k]);
                    for (int u = 0; u < STRIP_VECTORS; u++)
                        acc[k][u] = _mm256_fmadd_pd(wk, v[u], acc[k][u]);
                }
            }
        }
        for (int k = 0; k < OUT_BLOCK; k++)
            for (int u = 0; u < STRIP_VECTORS; u++)
                _mm256_maskstore_pd(p->flat + k * p->positions + q + 4 * u, mask[u], acc[k][u]);
    }
}

#endif /* DV_X86 */


/* Same flat positions as the vector paths, one fma at a time. */
static void strips_scalar(const plane_t *p)
{
    for (Py_ssize_t q = 0; q < p->positions; q++) {
        double acc[OUT_BLOCK] = {0.0};
        const double *w = p->weights;
        for (Py_ssize_t c = 0; c < p->group_channels; c++) {
            const double *base = p->plane + c * p->plane_size + q;
            for (Py_ssize_t t = 0; t < p->taps; t++, w += OUT_BLOCK) {
                double v = base[p->offsets[t]];
                for (int k = 0; k < OUT_BLOCK; k++)
                    acc[k] = fma(w[k], v, acc[k]);
            }
        }
        for (int k = 0; k < OUT_BLOCK; k++)
            p->flat[k * p->positions + q] = acc[k];
    }
}


static int isa_supported(int isa)
{
    if (isa == ISA_SCALAR)
        return 1;
#if DV_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static int best_isa(void)
{
    if (isa_supported(ISA_AVX512))
        return ISA_AVX512;
    if (isa_supported(ISA_AVX2))
        return ISA_AVX2;
    return ISA_SCALAR;
}


/*
 * One block of input channels. The input of the convolution is the
 * concatenation of its parts along the channels, in order. Batch element b
 * of the convolution reads row index[b] of the part, or row b without index.
 */
typedef struct {
    const double *buf;
    Py_ssize_t channels;
    Py_ssize_t rows;
    const long long *index;
} part_t;


/* Copy one batch element's channels, part by part, into zero-padded planes of Hp x Wp. */
static void pad_input(const dims_t *d, const part_t *parts, Py_ssize_t nparts, Py_ssize_t b, double *padded,
                      Py_ssize_t hp, Py_ssize_t wp)
{
    memset(padded, 0, sizeof(double) * d->channels * hp * wp);
    Py_ssize_t plane = d->height * d->width;
    Py_ssize_t first = 0;
    for (Py_ssize_t k = 0; k < nparts; k++) {
        const part_t *part = parts + k;
        Py_ssize_t row = part->index == NULL ? b : (Py_ssize_t)part->index[b];
        const double *x = part->buf + row * part->channels * plane;
        for (Py_ssize_t c = 0; c < part->channels; c++)
            for (Py_ssize_t y = 0; y < d->height; y++)
                memcpy(padded + ((first + c) * hp + y + d->ph) * wp + d->pw, x + (c * d->height + y) * d->width,
                       sizeof(double) * d->width);
        first += part->channels;
    }
}


/* Returns 0, or -1 when memory ran out. Runs without the GIL. */
static int run_conv(const dims_t *d, const part_t *parts, Py_ssize_t nparts, const double *weight, double *out,
                    int isa)
{
    Py_ssize_t hp = d->height + 2 * d->ph, wp = d->width + 2 * d->pw;
    Py_ssize_t taps = d->kh * d->kw;
    Py_ssize_t per_group = d->out_channels / d->groups;
    Py_ssize_t blocks = (per_group + OUT_BLOCK - 1) / OUT_BLOCK;
    Py_ssize_t positions = (d->out_h - 1) * wp + d->out_w;
    int flat_ok = d->sh == 1 && d->sw == 1;
    int status = -1;

    double *padded = malloc(sizeof(double) * (d->channels * hp * wp > 0 ? d->channels * hp * wp : 1));
    double *weights = NULL, *flat = NULL;
    Py_ssize_t *offsets = NULL;
    if (padded == NULL)
        goto done;

    if (flat_ok) {
        /* Weights regrouped so that a tap's OUT_BLOCK values are adjacent; missing channels get 0. */
        weights = calloc((size_t)(d->groups * blocks * d->group_channels * taps * OUT_BLOCK), sizeof(double));
        flat = malloc(sizeof(double) * OUT_BLOCK * positions);
        offsets = malloc(sizeof(Py_ssize_t) * taps);
        if (weights == NULL || flat == NULL || offsets == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < d->kh; i++)
            for (Py_ssize_t j = 0; j < d->kw; j++)
                offsets[i * d->kw + j] = i * d->dh * wp + j * d->dw;
        for (Py_ssize_t g = 0; g < d->groups; g++)
            for (Py_ssize_t blk = 0; blk < blocks; blk++)
                for (Py_ssize_t k = 0; k < OUT_BLOCK; k++) {
                    Py_ssize_t o = blk * OUT_BLOCK + k;
                    if (o >= per_group)
                        continue;
                    for (Py_ssize_t c = 0; c < d->group_channels; c++)
                        for (Py_ssize_t t = 0; t < taps; t++)
                            weights[(((g * blocks + blk) * d->group_channels + c) * taps + t) * OUT_BLOCK + k] =
                                weight[((g * per_group + o) * d->group_channels + c) * taps + t];
                }
    }

    for (Py_ssize_t b = 0; b < d->batch; b++) {
        pad_input(d, parts, nparts, b, padded, hp, wp);
        if (!flat_ok) {
            conv_scalar(d, padded, hp, wp, weight, out, b);
            continue;
        }
        for (Py_ssize_t g = 0; g < d->groups; g++) {
            for (Py_ssize_t blk = 0; blk < blocks; blk++) {
                plane_t p = {
                    padded + g * d->group_channels * hp * wp, hp * wp, d->group_channels, offsets, taps,
                    weights + (g * blocks + blk) * d->group_channels * taps * OUT_BLOCK, flat, positions,
                };
#if DV_X86
                if (isa == ISA_AVX512)
                    strips_avx512(&p);
                else if (isa == ISA_AVX2)
                    strips_avx2(&p);
                else
#endif
                    strips_scalar(&p);
                for (Py_ssize_t k = 0; k < OUT_BLOCK && blk * OUT_BLOCK + k < per_group; k++) {
                    Py_ssize_t o = g * per_group + blk * OUT_BLOCK + k;
                    write_plane(d, b, o, flat + k * positions, wp,
                                out + (b * d->out_channels + o) * d->out_h * d->out_w);
                }
            }
        }
    }
    status = 0;

done:
    free(padded);
    free(weights);
    free(flat);
    free(offsets);
    return status;
}


/* Check the dimensions and buffer sizes shared by both entry points; NULL when they are consistent. */
/* Largest accepted dimension: sums and two-factor products of dimensions then fit in Py_ssize_t. */
#define DIM_LIMIT ((Py_ssize_t)1 << 30)

/* a * b, or -1 when a factor is negative or the product exceeds PY_SSIZE_T_MAX (so -1 propagates). */
static Py_ssize_t mul(Py_ssize_t a, Py_ssize_t b)
{
    if (a < 0 || b < 0 || (a != 0 && b > PY_SSIZE_T_MAX / a))
        return -1;
    return a * b;
}

static Py_ssize_t mul4(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, Py_ssize_t e)
{
    return mul(mul(mul(a, b), c), e);
}


static const char *check_dims(const dims_t *d, Py_ssize_t weight_len, Py_ssize_t out_len, const Py_buffer *bias,
                              const Py_buffer *addend)
{
    const Py_ssize_t dims[] = {d->batch, d->channels, d->height, d->width, d->out_channels, d->group_channels, d->kh,
                               d->kw, d->groups, d->sh, d->sw, d->ph, d->pw, d->dh, d->dw, d->out_h, d->out_w};
    for (size_t k = 0; k < sizeof(dims) / sizeof(dims[0]); k++)
        if (dims[k] > DIM_LIMIT)
            return "a dimension exceeds 2**30";
    if (d->batch < 0 || d->channels < 1 || d->height < 1 || d->width < 1 || d->out_channels < 1 ||
        d->group_channels < 1 || d->kh < 1 || d->kw < 1 || d->groups < 1 || d->sh < 1 || d->sw < 1 || d->ph < 0 ||
        d->pw < 0 || d->dh < 1 || d->dw < 1 || d->out_h < 1 || d->out_w < 1)
        return "a dimension is out of range";
    if (d->channels != d->groups * d->group_channels || d->out_channels % d->groups != 0)
        return "channels do not match groups";
    /* Every term below is under 2**62, so no sum overflows. */
    Py_ssize_t reach_h = d->height + 2 * d->ph - (d->kh - 1) * d->dh - 1;
    Py_ssize_t reach_w = d->width + 2 * d->pw - (d->kw - 1) * d->dw - 1;
    if (reach_h < 0 || reach_w < 0 || d->out_h != reach_h / d->sh + 1 || d->out_w != reach_w / d->sw + 1)
        return "out_h and out_w are not the output size of this input, kernel, padding, stride and dilation";
    Py_ssize_t hp = d->height + 2 * d->ph, wp = d->width + 2 * d->pw;
    Py_ssize_t per_group = d->out_channels / d->groups;
    Py_ssize_t blocks = (per_group + OUT_BLOCK - 1) / OUT_BLOCK;
    Py_ssize_t sizes[] = {
        mul4((Py_ssize_t)sizeof(double), d->out_channels, d->group_channels, mul(d->kh, d->kw)),
        mul4((Py_ssize_t)sizeof(double), d->batch, d->out_channels, mul(d->out_h, d->out_w)),
        mul4((Py_ssize_t)sizeof(double), d->channels, hp, wp),
        mul4((Py_ssize_t)sizeof(double) * OUT_BLOCK, mul(d->groups, blocks), d->group_channels, mul(d->kh, d->kw)),
        mul4((Py_ssize_t)sizeof(double) * OUT_BLOCK, hp, wp, 1),
        mul4((Py_ssize_t)sizeof(double), d->out_channels, d->out_h, d->out_w),
    };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
        if (sizes[k] < 0)
            return "the dimensions overflow the addressable size";
    if (weight_len != sizes[0])
        return "the weight buffer size does not match its dimensions";
    if (out_len != sizes[1])
        return "the output buffer size does not match its dimensions";
    if (d->bias != NULL && bias->len != (Py_ssize_t)sizeof(double) * d->out_channels)
        return "the bias buffer size does not match the output channels";
    if (d->addend != NULL && addend->len != sizes[5])
        return "the addend buffer size does not match the output of one batch element";
    if (d->bias_mode != BIAS_NONE && d->bias_mode != BIAS_ALL && d->bias_mode != BIAS_EVEN)
        return "the bias mode is not 0, 1 or 2";
    if ((d->bias != NULL || d->addend != NULL) && d->bias_mode == BIAS_NONE)
        return "a bias or addend needs bias mode 1 or 2";
    return NULL;
}


/*
 * Check one part against the dimensions: whole rows, and every row index
 * inside them. The indices are copied into `owned` (freed by the caller), so
 * that a buffer written during the convolution cannot change them.
 */
static const char *check_part(const dims_t *d, const Py_buffer *buf, const Py_buffer *index, part_t *part,
                              long long **owned)
{
    if (part->channels < 1 || part->channels > DIM_LIMIT)
        return "a part's channel count is out of range";
    Py_ssize_t row_bytes = mul4((Py_ssize_t)sizeof(double), part->channels, d->height, d->width);
    if (row_bytes <= 0)
        return "the dimensions overflow the addressable size";
    if (buf->len % row_bytes != 0)
        return "an input buffer size is not a whole number of rows of its channels";
    part->buf = (const double *)buf->buf;
    part->rows = buf->len / row_bytes;
    part->index = NULL;
    if (index->buf == NULL) {
        if (part->rows != d->batch)
            return "the input buffer size does not match its dimensions";
        return NULL;
    }
    if (index->len != (Py_ssize_t)sizeof(long long) * d->batch)
        return "a row index does not hold one int64 per batch element";
    *owned = malloc(sizeof(long long) * (d->batch > 0 ? (size_t)d->batch : 1));
    if (*owned == NULL)
        return "out of memory for the row index";
    memcpy(*owned, index->buf, sizeof(long long) * (size_t)d->batch);
    part->index = *owned;
    for (Py_ssize_t b = 0; b < d->batch; b++)
        if (part->index[b] < 0 || part->index[b] >= part->rows)
            return "a row index points outside its input";
    return NULL;
}


/* Run the checked convolution without the GIL; set the Python error and return NULL on failure. */
static PyObject *finish(const char *problem, const dims_t *d, const part_t *parts, Py_ssize_t nparts,
                        const double *weight, double *out, int isa)
{
    if (problem == NULL && (isa < ISA_SCALAR || isa > ISA_AVX512))
        problem = "isa must be 0 (best available), 1 (scalar), 2 (AVX2) or 3 (AVX-512)";
    if (problem == NULL && !isa_supported(isa))
        problem = "the requested instruction set is not available on this processor";
    if (problem != NULL) {
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_conv(d, parts, nparts, weight, out, isa);
    Py_END_ALLOW_THREADS
    if (status != 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}


static PyObject *py_conv2d_parts(PyObject *self, PyObject *args)
{
    PyObject *sequence;
    Py_buffer wb, ob, bb = {0}, ab = {0};
    dims_t d;
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*w*(nnnnnnnnnnnnnnnnn)iz*iz*", &sequence, &wb, &ob, &d.batch, &d.channels,
                          &d.height, &d.width, &d.out_channels, &d.group_channels, &d.kh, &d.kw, &d.groups, &d.sh,
                          &d.sw, &d.ph, &d.pw, &d.dh, &d.dw, &d.out_h, &d.out_w, &isa, &bb, &d.bias_mode, &ab))
        return NULL;
    d.bias = (const double *)bb.buf;
    d.addend = (const double *)ab.buf;
    if (isa == ISA_AUTO)
        isa = best_isa();

    PyObject *items = PySequence_Fast(sequence, "parts must be a sequence of (buffer, channels, index) tuples");
    Py_ssize_t nparts = items == NULL ? 0 : PySequence_Fast_GET_SIZE(items);
    part_t *parts = nparts > 0 ? calloc((size_t)nparts, sizeof(part_t)) : NULL;
    Py_buffer *buffers = nparts > 0 ? calloc((size_t)(2 * nparts), sizeof(Py_buffer)) : NULL;
    long long **owned = nparts > 0 ? calloc((size_t)nparts, sizeof(long long *)) : NULL;
    Py_ssize_t parsed = 0;
    PyObject *result = NULL;
    const char *problem = NULL;
    if (items == NULL)
        goto done;
    if (nparts == 0) {
        problem = "parts is empty";
    } else if (parts == NULL || buffers == NULL || owned == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; problem == NULL && parsed < nparts; parsed++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, parsed);
        if (!PyArg_ParseTuple(item, "y*nz*", &buffers[2 * parsed], &parts[parsed].channels, &buffers[2 * parsed + 1]))
            goto done;
    }
    if (problem == NULL) {
        Py_ssize_t channels = 0;
        for (Py_ssize_t k = 0; problem == NULL && k < nparts; k++) {
            if (parts[k].channels < 1 || parts[k].channels > DIM_LIMIT)
                problem = "a part's channel count is out of range";
            else
                channels += parts[k].channels;
        }
        if (problem == NULL)
            problem = channels != d.channels ? "the parts' channels do not add up to the input channels"
                                             : check_dims(&d, wb.len, ob.len, &bb, &ab);
        for (Py_ssize_t k = 0; problem == NULL && k < nparts; k++)
            problem = check_part(&d, &buffers[2 * k], &buffers[2 * k + 1], &parts[k], &owned[k]);
    }
    result = finish(problem, &d, parts, nparts, (const double *)wb.buf, (double *)ob.buf, isa);

done:
    for (Py_ssize_t k = 0; k < parsed; k++) {
        PyBuffer_Release(&buffers[2 * k]);
        if (buffers[2 * k + 1].obj != NULL)
            PyBuffer_Release(&buffers[2 * k + 1]);
    }
    for (Py_ssize_t k = 0; owned != NULL && k < nparts; k++)
        free(owned[k]);
    free(owned);
    free(parts);
    free(buffers);
    Py_XDECREF(items);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&ob);
    if (bb.obj != NULL)
        PyBuffer_Release(&bb);
    if (ab.obj != NULL)
        PyBuffer_Release(&ab);
    return result;
}


static PyObject *py_instruction_sets(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    PyObject *names = PyList_New(0);
    if (names == NULL)
        return NULL;
    const char *labels[] = {"scalar", "avx2", "avx512"};
    for (int isa = ISA_SCALAR; isa <= ISA_AVX512; isa++) {
        if (!isa_supported(isa))
            continue;
        PyObject *name = PyUnicode_FromString(labels[isa - 1]);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    return names;
}


static PyMethodDef methods[] = {
    {"conv2d_parts", py_conv2d_parts, METH_VARARGS,
     "conv2d_parts(parts, weight, out, dims, isa, bias, bias_mode, addend): float64 cross-correlation by fma\n"
     "chains into out. parts gives the input as channel blocks, a sequence of (buffer, channels, index),\n"
     "where index is None or one int64 per batch element naming the row of that buffer to read.\n"
     "dims = (batch, C, H, W, O, C/groups, kh, kw, groups, sh, sw, ph, pw, dh, dw, out_h, out_w);\n"
     "isa: 0 best available, 1 scalar, 2 AVX2, 3 AVX-512; bias: None or O float64 values added\n"
     "after the chain, then addend (None or O * out_h * out_w values) after the bias (bias_mode 1: every\n"
     "row; 2: even rows, odd rows get + 0.0 * bias and + 0.0 * addend)."},
    {"instruction_sets", py_instruction_sets, METH_NOARGS,
     "instruction_sets(): names of the paths this processor can run, slowest first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fmaconv", "Float64 convolution by fused multiply-add chains.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fmaconv(void)
{
    return PyModule_Create(&module);
}
