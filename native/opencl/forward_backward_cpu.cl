// forward_backward_cpu.cl: the CPU-device variant, fused over tiles of TS samples.
// mirrors ReferenceBackend.HiddenForward, OutputForward, CrossEntropyMetrics, Softmax, OutputBackward and
// HiddenBackward (before the division by n):
//   pixels (n,784) uchar, labels (n), params [w1 (H,784) | b1 (H) | w2 (10,H) | b2 (10)]
//   -> partials (groups, partial_stride) [dw1 (H,784) | db1 (H) | dw2 (10,H) | db2 (10)] summed over the
//      group's samples, metrics (groups, 2) = (correct, loss sum).
// A few work-items (a small multiple of the compute units), each owning a contiguous range of samples:
// on a CPU device a work-item is a thread running explicit VW-wide vector code, so it wants a lot of work
// and no barriers. restrict matters: without it every += to a partial may alias the weights. A tile of TS samples shares every load of a w1 row (forward) and every load and store of
// a dw1 row (backward); the tile's pixels, converted once from uchar, stay in L1.
__kernel void forward_backward_cpu(__global const uchar* restrict pixels, __global const uchar* restrict labels, const int n,
                                   const int samples_per_group, __global const real* restrict params,
                                   __global real* restrict partials, const int partial_stride, __global real* restrict metrics)
{
    const int g = get_global_id(0);
    const int begin = min(n, g * samples_per_group);
    const int end = min(n, begin + samples_per_group);
    __global const real* w1 = params + W1_OFF;
    __global const real* b1 = params + B1_OFF;
    __global const real* w2 = params + W2_OFF;
    __global const real* b2 = params + B2_OFF;
    __global real* dw1 = partials + (size_t)g * partial_stride;
    __global real* db1 = dw1 + B1_OFF;
    __global real* dw2 = dw1 + W2_OFF;
    __global real* db2 = dw1 + B2_OFF;
    for (int p = 0; p < PARAM_COUNT; p++) dw1[p] = 0;

    int correct = 0;
    real loss = 0;
    realV x[TS][IN_V];
    real z1[TS][H], dz1[TS][H];
    for (int s0 = begin; s0 < end; s0 += TS)
    {
        const int ts = min(TS, end - s0);
        for (int t = 0; t < TS; t++)
            for (int k = 0; k < IN_V; k++)
                x[t][k] = t < ts ? convert_realV(vloadV(k, pixels + (size_t)(s0 + t) * IN)) / (real)255 : (realV)0;

        // HiddenForward: z1 = x w1^T + b1
        for (int j = 0; j < H; j++)
        {
            __global const real* wj = w1 + j * IN;
            realV acc[TS];
            for (int t = 0; t < TS; t++) acc[t] = 0;
            for (int k = 0; k < IN_V; k++)
            {
                realV w = vloadV(k, wj);
                for (int t = 0; t < TS; t++) acc[t] = mad(w, x[t][k], acc[t]);
            }
            for (int t = 0; t < TS; t++) z1[t][j] = hsum(acc[t]) + b1[j];
        }

        real tileLoss = 0;
        for (int t = 0; t < TS; t++)
        {
            if (t >= ts)
            {
                for (int j = 0; j < H; j++) dz1[t][j] = 0;
                continue;
            }
            real a1[H];
            for (int j = 0; j < H; j++) a1[j] = max(z1[t][j], (real)0);
            real dz2[OUT];
            output_forward_backward(dz2, a1, w2, b2, labels[s0 + t], &correct, &tileLoss);
            // OutputBackward: dw2 += dz2^T a1, db2 += dz2
            for (int c = 0; c < OUT; c++)
            {
                db2[c] += dz2[c];
                for (int j = 0; j < H; j++) dw2[c * H + j] += dz2[c] * a1[j];
            }
            // HiddenBackward, first half: dz1 = (dz2 w2) * relu'(z1), db1 += dz1
            for (int j = 0; j < H; j++)
            {
                real d = 0;
                if (z1[t][j] > 0)
                    for (int c = 0; c < OUT; c++) d += w2[c * H + j] * dz2[c];
                dz1[t][j] = d;
                db1[j] += d;
            }
        }
        loss += tileLoss;

        // HiddenBackward, second half: dw1 += dz1^T x
        for (int j = 0; j < H; j++)
        {
            bool any = false;
            for (int t = 0; t < TS; t++) any |= dz1[t][j] != 0;
            if (!any) continue; // relu'(z) = 0 for the whole tile: this unit passes no gradient
            __global real* dwj = dw1 + j * IN;
            for (int k = 0; k < IN_V; k++)
            {
                realV acc = vloadV(k, dwj);
                for (int t = 0; t < TS; t++) acc = mad((realV)dz1[t][j], x[t][k], acc);
                vstoreV(acc, k, dwj);
            }
        }
    }
    metrics[2 * g] = (real)correct;
    metrics[2 * g + 1] = loss;
}
