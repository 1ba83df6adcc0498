/* CPU kernels for the fast radiance field: multi-resolution hash-grid encoding
 * (forward and backward) and occupancy-guided ray marching.  Plain C + OpenMP,
 * called through ctypes with raw float/int pointers; engine/core/native.py
 * compiles it on first use and engine/encodings.py holds the torch reference
 * implementations these must match exactly. */
#include <math.h>
#include <stdint.h>
#include <string.h>

static const uint32_t PRIME1 = 2654435761u, PRIME2 = 805459861u;

static inline int64_t grid_index(int64_t x, int64_t y, int64_t z, int64_t side, int64_t size, int dense) {
    if (dense) return (z * side + y) * side + x;
    uint32_t h = (uint32_t)x ^ ((uint32_t)y * PRIME1) ^ ((uint32_t)z * PRIME2);
    return (int64_t)(h % (uint32_t)size);
}

/* Asks the cache for the 8 table rows a point will read at one level, a few points before they are read:
 * the hashed levels' rows are scattered over megabytes, and loading them only when needed left the
 * encoding waiting on memory (the same results, 1.4x faster on a face training step's samples, 2.2x on
 * scattered points; the backward, one level per thread, gained nothing measurable).  Levels that fit in
 * 64 KB stay in cache anyway. */
#define PREFETCH_AHEAD 8
static inline __attribute__((always_inline)) void prefetch_cell(const float *tab, const float *p, float s,
        int64_t side, int64_t size, int f) {
    int dense = side * side * side <= size;
    if (dense && size * f * (int64_t)sizeof(float) < 65536) return;
    int64_t x0 = (int64_t)floorf(p[0] * s), y0 = (int64_t)floorf(p[1] * s), z0 = (int64_t)floorf(p[2] * s);
    for (int c = 0; c < 4; c++) {  /* both x neighbours per statement: gcc dropped a loop of single prefetches */
        int64_t y = y0 + (c & 1), z = z0 + (c >> 1);
        __builtin_prefetch(tab + grid_index(x0, y, z, side, size, dense) * f);
        __builtin_prefetch(tab + grid_index(x0 + 1, y, z, side, size, dense) * f);
    }
}

/* One point's features at every level.  Inlined with f a constant where the caller knows it (2, the
 * models' setting): with f only known at run time the per-feature loops kept their sums in memory and
 * the forward and backward passes took twice as long (same results, the same operations in the same order). */
static inline __attribute__((always_inline)) void encode_point(const float *p, const float *table, int f,
        int levels, const int64_t *offsets, const int64_t *sizes, const float *scales, float *o) {
    for (int l = 0; l < levels; l++) {
        float s = scales[l];
        int64_t side = (int64_t)s + 2;
        int dense = side * side * side <= sizes[l];
        float px = p[0] * s, py = p[1] * s, pz = p[2] * s;
        float fx = floorf(px), fy = floorf(py), fz = floorf(pz);
        int64_t x0 = (int64_t)fx, y0 = (int64_t)fy, z0 = (int64_t)fz;
        float wx = px - fx, wy = py - fy, wz = pz - fz;
        const float *tab = table + offsets[l] * f;
        float acc[8] = {0};
        for (int c = 0; c < 8; c++) {
            int dx = c & 1, dy = (c >> 1) & 1, dz = (c >> 2) & 1;
            float w = (dx ? wx : 1 - wx) * (dy ? wy : 1 - wy) * (dz ? wz : 1 - wz);
            const float *row = tab + grid_index(x0 + dx, y0 + dy, z0 + dz, side, sizes[l], dense) * f;
            for (int k = 0; k < f; k++) acc[k] += w * row[k];
        }
        for (int k = 0; k < f; k++) o[l * f + k] = acc[k];
    }
}

/* points in [0,1]^3 (n,3); table (total,f); out (n, levels*f). */
void hash_encode_forward(const float *points, int64_t n, const float *table, int f, int levels,
                         const int64_t *offsets, const int64_t *sizes, const float *scales, float *out) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *o = out + i * (int64_t)levels * f;
        if (i + PREFETCH_AHEAD < n)
            for (int l = 0; l < levels; l++)
                prefetch_cell(table + offsets[l] * f, points + 3 * (i + PREFETCH_AHEAD), scales[l],
                              (int64_t)scales[l] + 2, sizes[l], f);
        if (f == 2)
            encode_point(points + 3 * i, table, 2, levels, offsets, sizes, scales, o);
        else
            encode_point(points + 3 * i, table, f, levels, offsets, sizes, scales, o);
    }
}

/* One level's gradient rows for every point, f as in encode_point. */
static inline __attribute__((always_inline)) void backward_level(const float *points, int64_t n,
        const float *grad_out, int f, int levels, int l, int64_t size, float s, float *gtab) {
    int64_t side = (int64_t)s + 2;
    int dense = side * side * side <= size;
    for (int64_t i = 0; i < n; i++) {
        const float *p = points + 3 * i;
        const float *g = grad_out + i * (int64_t)levels * f + l * f;
        float px = p[0] * s, py = p[1] * s, pz = p[2] * s;
        float fx = floorf(px), fy = floorf(py), fz = floorf(pz);
        int64_t x0 = (int64_t)fx, y0 = (int64_t)fy, z0 = (int64_t)fz;
        float wx = px - fx, wy = py - fy, wz = pz - fz;
        for (int c = 0; c < 8; c++) {
            int dx = c & 1, dy = (c >> 1) & 1, dz = (c >> 2) & 1;
            float w = (dx ? wx : 1 - wx) * (dy ? wy : 1 - wy) * (dz ? wz : 1 - wz);
            float *row = gtab + grid_index(x0 + dx, y0 + dy, z0 + dz, side, size, dense) * f;
            for (int k = 0; k < f; k++) row[k] += w * g[k];
        }
    }
}

/* Writes d(loss)/d(table) into grad_table (no need to zero it first); one thread per level, so
 * no two threads write one row, and each clears its own level (first touch, in parallel). */
void hash_encode_backward(const float *points, int64_t n, const float *grad_out, int f, int levels,
                          const int64_t *offsets, const int64_t *sizes, const float *scales, float *grad_table) {
    #pragma omp parallel for schedule(dynamic, 1)
    for (int l = 0; l < levels; l++) {
        float *gtab = grad_table + offsets[l] * f;
        memset(gtab, 0, (size_t)sizes[l] * f * sizeof(float));
        if (f == 2)
            backward_level(points, n, grad_out, 2, levels, l, sizes[l], scales[l], gtab);
        else
            backward_level(points, n, grad_out, f, levels, l, sizes[l], scales[l], gtab);
    }
}

/* Maps a world point to the unit cube of the occupancy grid: the scene contraction
 * (L-infinity, mip-NeRF 360 style) to [-2,2]^3 when contract, else the box [-1,1]^3. */
static inline int to_unit(const float *x, int contract, float *u) {
    float y[3] = {x[0], x[1], x[2]};
    if (contract) {
        float m = fmaxf(fabsf(y[0]), fmaxf(fabsf(y[1]), fabsf(y[2])));
        if (m > 1.0f) {
            float k = (2.0f - 1.0f / m) / m;
            y[0] *= k; y[1] *= k; y[2] *= k;
        }
        for (int a = 0; a < 3; a++) u[a] = (y[a] + 2.0f) * 0.25f;
    } else {
        for (int a = 0; a < 3; a++) u[a] = (y[a] + 1.0f) * 0.5f;
    }
    return u[0] >= 0 && u[0] < 1 && u[1] >= 0 && u[1] < 1 && u[2] >= 0 && u[2] < 1;
}

/* Step length at distance t where the sample starts at x: about a pixel footprint (cone * t),
 * at least min_step, and in the contracted shell (|x|_inf > 1) at least contracted_step in
 * contracted units (which is contracted_step * |x|^2 world units), so far regions cost as many
 * samples per occupancy cell as near ones. */
static inline float step_size(float t, const float *x, int contract, float min_step, float max_step,
                              float cone, float contracted_step) {
    float dt = fminf(fmaxf(cone * t, min_step), max_step);
    if (contract) {
        float m = fmaxf(fabsf(x[0]), fmaxf(fabsf(x[1]), fabsf(x[2])));
        if (m > 1.0f) dt = fmaxf(dt, contracted_step * m * m);
    }
    return dt;
}

/* Marches each ray from near[r] to far[r], keeping the samples whose midpoint lies in an occupied
 * cell, at most max_per_ray of them when that is positive (renders march in rounds and retire rays
 * that turned opaque).  counts[r] receives the number kept; when out_t0 is non-NULL the samples are
 * written at offsets starts[r] (the first pass only counts). */
void march_rays(const float *origins, const float *dirs, const float *near, const float *far, int64_t n_rays,
                const float *step_params, int64_t max_steps, int64_t max_per_ray, const uint8_t *occ, int res,
                int contract, int64_t *counts, const int64_t *starts, int64_t *out_ray, float *out_t0,
                float *out_t1) {
    float min_step = step_params[0], max_step = step_params[1], cone = step_params[2], cstep = step_params[3];
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t r = 0; r < n_rays; r++) {
        const float *o = origins + 3 * r, *d = dirs + 3 * r;
        int64_t c = 0, w = out_t0 ? starts[r] : 0;
        float t0 = near[r];
        for (int64_t k = 0; k < max_steps && t0 < far[r] && (max_per_ray <= 0 || c < max_per_ray); k++) {
            float x0[3] = {o[0] + t0 * d[0], o[1] + t0 * d[1], o[2] + t0 * d[2]};
            float t1 = fminf(t0 + step_size(t0, x0, contract, min_step, max_step, cone, cstep), far[r]);
            float tm = 0.5f * (t0 + t1), x[3] = {o[0] + tm * d[0], o[1] + tm * d[1], o[2] + tm * d[2]}, u[3];
            if (to_unit(x, contract, u)) {
                int ix = (int)(u[0] * res), iy = (int)(u[1] * res), iz = (int)(u[2] * res);
                if (occ[((int64_t)ix * res + iy) * res + iz]) {
                    if (out_t0) { out_ray[w] = r; out_t0[w] = t0; out_t1[w] = t1; w++; }
                    c++;
                }
            }
            t0 = t1;
        }
        counts[r] = c;
    }
}
