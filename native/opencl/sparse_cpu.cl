// sparse_cpu.cl: the CPU-device variant's sparse layer-1 kernels, on the PixelBlocks layout (Core/PixelBlocks.cs).
// The samples come reordered and cut into blocks of 8; a block keeps only the pixel columns non-zero in one of its
// samples, as 8 raw bytes. A block's 8 samples sit across the lanes of a real8, so every FMA does 8 samples' work
// and a pixel that is zero in all of them costs nothing. Two kernels per step instead of forward_backward_cpu:
//   sparse_forward_cpu: mirrors, per block, Reference.LinearForward + ReluForward (hidden layer, over the block's
//     entries), LinearForward (output), SoftmaxCrossEntropy, LinearBackward (output), ReluBackward, and the
//     hidden bias gradient: -> dz1 (blocks, H, 8) and per-work-item partials [db1 (H) | dw2 (10,H) | db2 (10)],
//     metrics (items, 2) = (correct, loss sum);
//   sparse_weight_gradient_cpu: mirrors Reference.LinearBackward's dw1 = dz1 x^T / n, per pixel column over the
//     column's entries (block, bytes), so each dw1 value is one work-item's and needs no reduction; it also takes
//     the gradient-descent step on w1 (sparse_forward_cpu, the only reader of w1, has run by then).
// The gradient kernel also sums the other partials, as reduce_update does for the dense kernel. Every work-item owns a fixed range of blocks
// or pixels (split by the host in proportion to the entries), so the sums run in a fixed order: deterministic
// for a given item count.
// The hidden units go in chunks of HC (host-chosen, <= 16, HC * ceil(H / HC) close to H): HC real8 accumulators
// stay in registers while one chunk walks the entries. The last chunk's units past H repeat unit H-1 (the work is
// done and dropped) so that the inner loop has a compile-time trip count, which the compiler fully unrolls.
// The input scale x / 255 goes on the sums, as in forward_backward_cpu.

#define BS 8
// the parameters after w1 (b1, w2, b2): what sparse_forward_cpu's partials hold
#define TAIL (PARAM_COUNT - B1_OFF)
#define TAIL_PAD ((TAIL + 15) / 16 * 16)
#define convert_real8 CAT(convert_, real8)

// the output layer runs on two blocks at once, 16 samples across the lanes: its per-block cost (exp, the divisions,
// the gradient sums) was a third of the forward kernel's time on 8 lanes
#define PAIR 16
#define realP CAT(REAL, 16)
#define convert_realP CAT(convert_, realP)

inline real hsum8(real8 v) { real4 b = v.lo + v.hi; real2 c = b.lo + b.hi; return c.x + c.y; }
inline real hsum16(realP v) { return hsum8(v.lo + v.hi); }

__kernel void sparse_forward_cpu(__global const int* restrict block_split,
                                 __global const int* restrict block_start,
                                 __global const ushort* restrict block_column,
                                 __global const uchar* restrict block_bytes,
                                 __global const uchar* restrict block_labels, __global const real* restrict params,
                                 __global real* restrict dz1, __global real* restrict partials,
                                 const int partial_stride, __global real* restrict metrics)
{
    const int g = get_global_id(0);
    __global const real* restrict w1 = params + W1_OFF;
    __global const real* restrict b1 = params + B1_OFF;
    __global const real* restrict w2 = params + W2_OFF;
    __global const real* restrict b2 = params + B2_OFF;
    // this item's partial: [db1 (H) | dw2 (10,H) | db2 (10)] as reduce_update reads it, written at the end from
    // the same sums kept per lane (TAIL real16s after it), so that a block pair adds a vector, not a horizontal sum
    __global real* restrict slice = partials + (size_t)g * partial_stride;
    __global real* restrict db1 = slice + TAIL_PAD;
    __global real* restrict dw2 = db1 + (W2_OFF - B1_OFF) * PAIR;
    __global real* restrict db2 = db1 + (B2_OFF - B1_OFF) * PAIR;
    for (int p = 0; p < TAIL; p++) vstore16((realP)0, p, db1);

    int correct = 0;
    real loss = 0;
    const int last = block_split[g + 1];
    for (int b0 = block_split[g]; b0 < last; b0 += 2)
    {
        const int pair = min(2, last - b0); // 1 for the range's odd last block
        for (int b = b0; b < b0 + pair; b++)
        {
            const int e0 = block_start[b], e1 = block_start[b + 1];
            __global real* restrict z = dz1 + (size_t)b * H * BS; // z1, then dz1 in place: (H, 8)

            // LinearForward + ReluForward (hidden): z1 = (w1 x) / 255 + b1 over the block's entries, HC units a pass
            for (int j0 = 0; j0 < H; j0 += HC)
            {
                real8 acc[HC];
#pragma unroll
                for (int i = 0; i < HC; i++) acc[i] = 0;
                for (int e = e0; e < e1; e++)
                {
                    const int k = block_column[e];
                    const real8 x = convert_real8(vload8(e, block_bytes));
#pragma unroll
                    for (int i = 0; i < HC; i++) acc[i] = fma((real8)w1[min(j0 + i, H - 1) * IN + k], x, acc[i]);
                }
#pragma unroll
                for (int i = 0; i < HC; i++)
                    if (j0 + i < H) vstore8(acc[i] / (real)255 + (real8)b1[j0 + i], j0 + i, z);
            }
        }

        // LinearForward (output) and SoftmaxCrossEntropy with the pair's 16 samples across the lanes (block b0 in
        // the low half; a lone block's high half repeats it, masked out as padding)
        __global real* restrict za = dz1 + (size_t)b0 * H * BS;
        __global real* restrict zb = pair == 2 ? za + H * BS : za;
        const uchar8 none = (uchar8)255;
        const uchar8 yb = pair == 2 ? vload8(b0 + 1, block_labels) : none;
        const realP y = convert_realP((uchar16)(vload8(b0, block_labels), yb));
        const realP valid = select((realP)0, (realP)1, y < (realP)OUT); // 255 marks the padding
        realP z2[OUT];
        for (int c = 0; c < OUT; c++) z2[c] = (realP)b2[c];
        for (int j = 0; j < H; j++)
        {
            const realP a = fmax((realP)(vload8(j, za), vload8(j, zb)), (realP)0);
            for (int c = 0; c < OUT; c++) z2[c] = fma((realP)w2[c * H + j], a, z2[c]);
        }
        SOFTMAX_CROSS_ENTROPY(realP, hsum16, z2, y, valid, correct, loss);
        // LinearBackward (output): db2 += dz2, dw2 += dz2^T a1
        for (int c = 0; c < OUT; c++) vstore16(vload16(c, db2) + z2[c], c, db2);
        // LinearBackward (output, dx) + ReluBackward: dz1 = (dz2 w2) * relu'(z1); LinearBackward (hidden): db1 += dz1
        for (int j = 0; j < H; j++)
        {
            const realP zj = (realP)(vload8(j, za), vload8(j, zb));
            const realP a = fmax(zj, (realP)0);
            realP d = 0;
            for (int c = 0; c < OUT; c++)
            {
                vstore16(fma(z2[c], a, vload16(c * H + j, dw2)), c * H + j, dw2);
                d = fma((realP)w2[c * H + j], z2[c], d);
            }
            d = select((realP)0, d, zj > (realP)0);
            vstore16(vload16(j, db1) + d, j, db1);
            vstore8(d.lo, j, za);
            if (pair == 2) vstore8(d.hi, j, zb);
        }
    }
    for (int p = 0; p < TAIL; p++) slice[p] = hsum16(vload16(p, db1));
    metrics[2 * g] = (real)correct;
    metrics[2 * g + 1] = loss;
}

__kernel void sparse_weight_gradient_cpu(__global const int* restrict column_split,
                                         __global const int* restrict column_start,
                                         __global const int* restrict column_block,
                                         __global const uchar* restrict column_bytes, __global const real* restrict dz1,
                                         __global real* restrict params, __global real* restrict grads,
                                         const real scale, const real lr, const int apply,
                                         __global const real* restrict partials, const int items,
                                         const int partial_stride, const real inv_n)
{
    const int g = get_global_id(0);
    // reduce_update's work for b1 .. b2 (sparse_forward_cpu's partials), a slice per item: one launch less
    const int per = (TAIL + items - 1) / items;
    for (int q = g * per; q < min(TAIL, (g + 1) * per); q++)
    {
        real sum = 0;
        for (int h = 0; h < items; h++) sum += partials[(size_t)h * partial_stride + q];
        const real grad = sum * inv_n;
        grads[B1_OFF + q] = grad;
        if (apply) params[B1_OFF + q] -= lr * grad;
    }
    const int last = column_split[g + 1];
    // two neighbouring pixels at a time, their entry lists merged by block: a block in both lists loads its dz1
    // once for both (the loads of dz1 from L2 bounded this kernel, neighbours share most blocks); a block in one
    // list only multiplies zeros for the other
    for (int k = column_split[g]; k < last; k += 2)
    {
        const int pair = min(2, last - k);
        const int ea = column_start[k], ea1 = column_start[k + 1];
        const int eb = pair == 2 ? ea1 : 0, eb1 = pair == 2 ? column_start[k + 2] : 0;
        for (int j0 = 0; j0 < H; j0 += HC2)
        {
            real8 acc[HC2], bcc[HC2];
#pragma unroll
            for (int i = 0; i < HC2; i++) acc[i] = bcc[i] = 0;
            int e = ea, f = eb;
            while (e < ea1 || f < eb1)
            {
                // clamped indices keep the loads in the buffer (entry 0 always exists); a finished list reads as
                // block INT_MAX
                const int ei = e < ea1 ? e : 0, fi = f < eb1 ? f : 0;
                const int be = e < ea1 ? column_block[ei] : INT_MAX, bf = f < eb1 ? column_block[fi] : INT_MAX;
                const int b = min(be, bf);
                const real8 x = convert_real8(vload8(ei, column_bytes)) * (real)(be == b);
                const real8 y = convert_real8(vload8(fi, column_bytes)) * (real)(bf == b);
                e += be == b;
                f += bf == b;
                __global const real* restrict d = dz1 + (size_t)b * H * BS;
#pragma unroll
                for (int i = 0; i < HC2; i++)
                {
                    const real8 v = vload8(min(j0 + i, H - 1), d);
                    acc[i] = fma(v, x, acc[i]);
                    bcc[i] = fma(v, y, bcc[i]);
                }
            }
            // dw1 = sum / (255 n), the step w1 -= lr dw1
#pragma unroll
            for (int i = 0; i < HC2; i++)
                if (j0 + i < H)
                {
                    const int p = W1_OFF + (j0 + i) * IN + k;
                    const real grad = hsum8(acc[i]) * scale;
                    grads[p] = grad;
                    if (apply) params[p] -= lr * grad;
                    if (pair == 2)
                    {
                        const real next = hsum8(bcc[i]) * scale;
                        grads[p + 1] = next;
                        if (apply) params[p + 1] -= lr * next;
                    }
                }
        }
    }
}
