// forward_backward_cpu.cl: the CPU-device variant, fused over tiles of TS samples.
// mirrors, fused for a 784-H-10 network: Reference.LinearForward + Reference.ReluForward (hidden layer),
// Reference.LinearForward (output layer), Reference.SoftmaxCrossEntropy, Reference.LinearBackward (output
// layer), Reference.ReluBackward and Reference.LinearBackward (hidden layer), summed over samples (reduce_update
// divides by n):
//   pixels (n,784) uchar, labels (n), params [w1 (H,784) | b1 (H) | w2 (10,H) | b2 (10)]
//   -> partials (groups, partial_stride) [dw1 (H,784) | db1 (H) | dw2 (10,H) | db2 (10)] summed over the
//      group's samples, metrics (groups, 2) = (correct, loss sum).
// A few work-items (a small multiple of the compute units), each owning a contiguous range of samples:
// on a CPU device a work-item is a thread running explicit VW-wide vector code, so it wants a lot of work
// and no barriers. The design follows the C# AVX-512 backend (docs/cpu-backends.md):
// - a tile's pixels are widened once to floats 0..255 (x); the input scale x / 255 is applied to the dot
//   products instead (z1 = (x w1^T) / 255 + b1, dw1 += (dz1 / 255)^T x): the same division by 255 as the
//   reference, once per sample and unit rather than once per pixel, so no division touches the pixels;
// - HiddenForward is register-blocked 4 samples x 2 hidden units (8 accumulators: 6 loads feed 8 FMAs);
// - the output layer, softmax, metrics and dz1 run with the tile's TS samples across the lanes of a
//   TS-wide vector (no per-sample scalar exp/log);
// - the next tile's pixels are prefetched while the current one computes;
// - HiddenBackward is blocked 2 hidden units x 7 vectors (14 accumulators held over the tile's samples,
//   one read-modify-write of the partial per tile).
// The blocks are written out as named private variables: PoCL's compiler kept arrays of accumulators on
// the stack (perf annotate showed every FMA as a load, add and store), and mad() compiled to mul + add, so
// the kernel calls fma(). restrict matters: without it every += to a partial may alias the weights.

#define realT CAT(REAL, TS)
#define vloadT CAT(vload, TS)
#define vstoreT CAT(vstore, TS)
#define convert_realT CAT(convert_, realT)

#if defined(__has_builtin)
#if __has_builtin(__builtin_prefetch)
#define PREFETCH 1
#endif
#endif
#ifndef PREFETCH
#define PREFETCH 0
#endif

#if TS == 16
#define LANE_IDS ((realT)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
inline real hsumT(realT v) { real8 a = v.lo + v.hi; real4 b = a.lo + a.hi; real2 c = b.lo + b.hi; return c.x + c.y; }
#elif TS == 8
#define LANE_IDS ((realT)(0, 1, 2, 3, 4, 5, 6, 7))
inline real hsumT(realT v) { real4 b = v.lo + v.hi; real2 c = b.lo + b.hi; return c.x + c.y; }
#else
#error TS must be 8 or 16
#endif

// IN_V is 49 (float16) or 98 (double8): whole chunks of 7 vectors.
#define KB 7
#if IN_V % KB != 0
#error IN_V must be a multiple of 7
#endif

__kernel void forward_backward_cpu(__global const uchar* restrict pixels, __global const uchar* restrict labels, const int n,
                                   const int samples_per_group, __global const real* restrict params,
                                   __global real* restrict partials, const int partial_stride, __global real* restrict metrics)
{
    const int g = get_global_id(0);
    const int begin = min(n, g * samples_per_group);
    const int end = min(n, begin + samples_per_group);
    __global const real* restrict w1 = params + W1_OFF;
    __global const real* restrict b1 = params + B1_OFF;
    __global const real* restrict w2 = params + W2_OFF;
    __global const real* restrict b2 = params + B2_OFF;
    __global real* restrict dw1 = partials + (size_t)g * partial_stride;
    __global real* restrict db1 = dw1 + B1_OFF;
    __global real* restrict dw2 = dw1 + W2_OFF;
    __global real* restrict db2 = dw1 + B2_OFF;
    for (int p = 0; p < PARAM_COUNT; p++) dw1[p] = 0;

    int correct = 0;
    real loss = 0;
    realV x[TS][IN_V];      // the tile's pixels as 0..255
    real z1[H][TS];         // hidden-major: a row is one unit's TS samples, a realT vector
    real d1[H][TS];         // dz1 / 255, the broadcast coefficients of dw1
    int live[H];            // some sample of the tile passes a gradient through unit j
    for (int s0 = begin; s0 < end; s0 += TS)
    {
        const int ts = min(TS, end - s0);
        for (int t = 0; t < ts; t++)
        {
            __global const uchar* row = pixels + (size_t)(s0 + t) * IN;
            for (int k = 0; k < IN_V; k++) x[t][k] = convert_realV(vloadV(k, row));
#if PREFETCH
            // the next tile's row: its cache lines arrive while this tile computes (measured: ~12% less
            // kernel CPU time; the widening loop had been stalling on these loads)
            if (s0 + TS + t < end)
                for (int l = 0; l < IN; l += 64) __builtin_prefetch(row + (size_t)TS * IN + l, 0, 3);
#endif
        }
        for (int t = ts; t < TS; t++)
            for (int k = 0; k < IN_V; k++) x[t][k] = (realV)0;

        // LinearForward + ReluForward, hidden layer: z1 = (x w1^T) / 255 + b1, 4 samples x 2 units per block
        for (int t = 0; t < TS; t += 4)
        {
            int j = 0;
            for (; j + 1 < H; j += 2)
            {
                __global const real* restrict wa = w1 + j * IN;
                __global const real* restrict wb = wa + IN;
                realV a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
                for (int k = 0; k < IN_V; k++)
                {
                    const realV u = vloadV(k, wa), v = vloadV(k, wb);
                    const realV p0 = x[t][k], p1 = x[t + 1][k], p2 = x[t + 2][k], p3 = x[t + 3][k];
                    a0 = fma(u, p0, a0); a1 = fma(u, p1, a1); a2 = fma(u, p2, a2); a3 = fma(u, p3, a3);
                    c0 = fma(v, p0, c0); c1 = fma(v, p1, c1); c2 = fma(v, p2, c2); c3 = fma(v, p3, c3);
                }
                const real ba = b1[j], bb = b1[j + 1];
                z1[j][t] = hsum(a0) / (real)255 + ba; z1[j][t + 1] = hsum(a1) / (real)255 + ba;
                z1[j][t + 2] = hsum(a2) / (real)255 + ba; z1[j][t + 3] = hsum(a3) / (real)255 + ba;
                z1[j + 1][t] = hsum(c0) / (real)255 + bb; z1[j + 1][t + 1] = hsum(c1) / (real)255 + bb;
                z1[j + 1][t + 2] = hsum(c2) / (real)255 + bb; z1[j + 1][t + 3] = hsum(c3) / (real)255 + bb;
            }
            if (j < H) // odd H: the last unit alone
            {
                __global const real* restrict wa = w1 + j * IN;
                realV a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int k = 0; k < IN_V; k++)
                {
                    const realV u = vloadV(k, wa);
                    a0 = fma(u, x[t][k], a0); a1 = fma(u, x[t + 1][k], a1);
                    a2 = fma(u, x[t + 2][k], a2); a3 = fma(u, x[t + 3][k], a3);
                }
                const real ba = b1[j];
                z1[j][t] = hsum(a0) / (real)255 + ba; z1[j][t + 1] = hsum(a1) / (real)255 + ba;
                z1[j][t + 2] = hsum(a2) / (real)255 + ba; z1[j][t + 3] = hsum(a3) / (real)255 + ba;
            }
        }

        // LinearForward (output layer) and SoftmaxCrossEntropy with the samples across the lanes
        const realT lane = LANE_IDS;
        const realT validMask = select((realT)0, (realT)1, lane < (realT)ts); // 1 for the tile's real samples
        uchar lab[TS];
        for (int t = 0; t < TS; t++) lab[t] = t < ts ? labels[s0 + t] : (uchar)255;
        const realT y = convert_realT(vloadT(0, lab));
        realT z2[OUT];
        for (int c = 0; c < OUT; c++) z2[c] = (realT)b2[c];
        for (int j = 0; j < H; j++)
        {
            const realT a = fmax(vloadT(0, z1[j]), (realT)0);
            for (int c = 0; c < OUT; c++) z2[c] = fma((realT)w2[c * H + j], a, z2[c]);
        }
        SOFTMAX_CROSS_ENTROPY(realT, hsumT, z2, y, validMask, correct, loss);
        // LinearBackward (output): db2 += dz2, dw2 += dz2^T a1
        for (int c = 0; c < OUT; c++) db2[c] += hsumT(z2[c]);
        // LinearBackward (output, dx) + ReluBackward: dz1 = (dz2 w2) * relu'(z1); LinearBackward (hidden): db1 += dz1
        for (int j = 0; j < H; j++)
        {
            const realT zj = vloadT(0, z1[j]);
            const realT a = fmax(zj, (realT)0);
            realT d = 0;
            for (int c = 0; c < OUT; c++)
            {
                dw2[c * H + j] += hsumT(z2[c] * a);
                d = fma((realT)w2[c * H + j], z2[c], d);
            }
            d = select((realT)0, d, zj > (realT)0);
            db1[j] += hsumT(d);
            live[j] = any(d != (realT)0);
            vstoreT(d / (realT)255, 0, d1[j]);
        }

        // LinearBackward (hidden): dw1 += (dz1 / 255)^T x, 2 units x 7 vectors per block
        for (int k = 0; k < IN_V; k += KB)
        {
            int j = 0;
            for (; j + 1 < H; j += 2)
            {
                if (!live[j] && !live[j + 1]) continue; // relu'(z) = 0 for the whole tile
                __global real* restrict da = dw1 + j * IN;
                __global real* restrict db = da + IN;
                realV a0 = vloadV(k, da), a1 = vloadV(k + 1, da), a2 = vloadV(k + 2, da), a3 = vloadV(k + 3, da),
                      a4 = vloadV(k + 4, da), a5 = vloadV(k + 5, da), a6 = vloadV(k + 6, da);
                realV c0 = vloadV(k, db), c1 = vloadV(k + 1, db), c2 = vloadV(k + 2, db), c3 = vloadV(k + 3, db),
                      c4 = vloadV(k + 4, db), c5 = vloadV(k + 5, db), c6 = vloadV(k + 6, db);
                for (int t = 0; t < ts; t++)
                {
                    const realV ea = (realV)d1[j][t], eb = (realV)d1[j + 1][t];
                    const realV p0 = x[t][k], p1 = x[t][k + 1], p2 = x[t][k + 2], p3 = x[t][k + 3],
                                p4 = x[t][k + 4], p5 = x[t][k + 5], p6 = x[t][k + 6];
                    a0 = fma(ea, p0, a0); a1 = fma(ea, p1, a1); a2 = fma(ea, p2, a2); a3 = fma(ea, p3, a3);
                    a4 = fma(ea, p4, a4); a5 = fma(ea, p5, a5); a6 = fma(ea, p6, a6);
                    c0 = fma(eb, p0, c0); c1 = fma(eb, p1, c1); c2 = fma(eb, p2, c2); c3 = fma(eb, p3, c3);
                    c4 = fma(eb, p4, c4); c5 = fma(eb, p5, c5); c6 = fma(eb, p6, c6);
                }
                vstoreV(a0, k, da); vstoreV(a1, k + 1, da); vstoreV(a2, k + 2, da); vstoreV(a3, k + 3, da);
                vstoreV(a4, k + 4, da); vstoreV(a5, k + 5, da); vstoreV(a6, k + 6, da);
                vstoreV(c0, k, db); vstoreV(c1, k + 1, db); vstoreV(c2, k + 2, db); vstoreV(c3, k + 3, db);
                vstoreV(c4, k + 4, db); vstoreV(c5, k + 5, db); vstoreV(c6, k + 6, db);
            }
            if (j < H && live[j]) // odd H: the last unit alone
            {
                __global real* restrict da = dw1 + j * IN;
                realV a0 = vloadV(k, da), a1 = vloadV(k + 1, da), a2 = vloadV(k + 2, da), a3 = vloadV(k + 3, da),
                      a4 = vloadV(k + 4, da), a5 = vloadV(k + 5, da), a6 = vloadV(k + 6, da);
                for (int t = 0; t < ts; t++)
                {
                    const realV ea = (realV)d1[j][t];
                    a0 = fma(ea, x[t][k], a0); a1 = fma(ea, x[t][k + 1], a1); a2 = fma(ea, x[t][k + 2], a2);
                    a3 = fma(ea, x[t][k + 3], a3); a4 = fma(ea, x[t][k + 4], a4); a5 = fma(ea, x[t][k + 5], a5);
                    a6 = fma(ea, x[t][k + 6], a6);
                }
                vstoreV(a0, k, da); vstoreV(a1, k + 1, da); vstoreV(a2, k + 2, da); vstoreV(a3, k + 3, da);
                vstoreV(a4, k + 4, da); vstoreV(a5, k + 5, da); vstoreV(a6, k + 6, da);
            }
        }
    }
    metrics[2 * g] = (real)correct;
    metrics[2 * g + 1] = loss;
}
