// minibatch_cpu.cl: the CPU-device variant of minibatch.cl's matrix kernels (the host appends this file to
// minibatch.cl, whose real, IN and OUT it uses, and adds -D VW=16 for float, 8 for double: one 64-byte
// vector). The other kernels of a step (gather, softmax + loss, bias gradient, optimizer updates) are
// minibatch.cl's own for both variants; they do O(n * width) work, the matrix kernels O(n * width^2).
// On a CPU device (PoCL) a work-item is a loop iteration of a thread and every barrier splits the kernel
// into loops over the work-group, so the GPU kernels' 16 x 16 groups staging tiles in local memory run at a
// few GFLOP/s. These kernels are written like forward_backward_cpu.cl instead: a few dozen work-items
// (local size 1), each owning a rectangle of the output and computing it in register blocks of 4 x 4 with
// explicit VW-wide vectors and fma(), no local memory, no barriers. The host (LayerKernels.Split)
// sizes the rectangles: sides multiples of 4 (and of a 64-column strip along the input width) so that only
// the last rectangle of a row or column is ragged. In a ragged 4 x 4 block the missing rows read a valid row
// again (the clamped index) and are never stored, so every block runs the same straight-line code.
// The accumulators are named private variables, not arrays: PoCL's compiler kept arrays of accumulators on
// the stack (see forward_backward_cpu.cl).

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define realV CAT(REAL, VW)
#define real4 CAT(REAL, 4)
#define real8 CAT(REAL, 8)
#define vloadV CAT(vload, VW)
#define vstoreV CAT(vstore, VW)

// Columns of one strip of the outer-product kernels: 4 vectors, so that a 4 x 4 block of accumulators
// (16 registers of the 32 AVX-512 has) needs 4 vector loads and 4 broadcasts per 16 FMAs.
#define STRIP (4 * VW)

// The four horizontal sums of a, b, c, d as one vector (a transposing reduction: half the shuffles and adds
// of four separate sums).
inline real4 hsum4(realV a, realV b, realV c, realV d)
{
#if VW == 16
    const real8 ab = (real8)(a.lo.lo + a.lo.hi + a.hi.lo + a.hi.hi, b.lo.lo + b.lo.hi + b.hi.lo + b.hi.hi);
    const real8 cd = (real8)(c.lo.lo + c.lo.hi + c.hi.lo + c.hi.hi, d.lo.lo + d.lo.hi + d.hi.lo + d.hi.hi);
#elif VW == 8
    const real8 ab = (real8)(a.lo + a.hi, b.lo + b.hi);
    const real8 cd = (real8)(c.lo + c.hi, d.lo + d.hi);
#else
#error VW must be 8 or 16
#endif
    // ab = [a's 4 partials, b's 4], cd likewise -> [a a b b c c d d] -> [a b c d]
    const real8 p = (real8)(ab.even + ab.odd, cd.even + cd.odd);
    return p.even + p.odd;
}

// mirrors Reference.LinearForward, then Reference.ReluForward for hidden layers, for n samples (the CPU variant
// of minibatch.cl's layer_forward):
//   a_in (n,nIn), w (nOut,nIn), b (nOut) -> a_out (n,nOut) = a_in w^T + b, then relu(.) when relu != 0
// Work-item (g0, g1) computes the outputs [g0 * outputs_per_item, +outputs_per_item) of the samples
// [g1 * samples_per_item, +samples_per_item); both per-item counts are multiples of 4. Each 4 x 4 block is
// 16 dot products along the contiguous input axis (4 + 4 vector loads feed 16 FMAs per VW inputs), reduced
// with hsum4; the nIn % VW inputs past the last whole vector are added as scalars.
__kernel void layer_forward_cpu(__global real* restrict a_out, __global const real* restrict a_in, __global const real* restrict w,
                                __global const real* restrict b, const int n, const int nIn, const int nOut, const int relu,
                                const int samples_per_item, const int outputs_per_item)
{
    const int j_begin = get_global_id(0) * outputs_per_item, i_begin = get_global_id(1) * samples_per_item;
    const int j_end = min(nOut, j_begin + outputs_per_item), i_end = min(n, i_begin + samples_per_item);
    const int kv = nIn / VW; // whole vectors
    for (int i = i_begin; i < i_end; i += 4)
    {
        __global const real* restrict x0 = a_in + (size_t)i * nIn;
        __global const real* restrict x1 = a_in + (size_t)min(i + 1, i_end - 1) * nIn;
        __global const real* restrict x2 = a_in + (size_t)min(i + 2, i_end - 1) * nIn;
        __global const real* restrict x3 = a_in + (size_t)min(i + 3, i_end - 1) * nIn;
        for (int j = j_begin; j < j_end; j += 4)
        {
            __global const real* restrict w0 = w + (size_t)j * nIn;
            __global const real* restrict w1 = w + (size_t)min(j + 1, j_end - 1) * nIn;
            __global const real* restrict w2 = w + (size_t)min(j + 2, j_end - 1) * nIn;
            __global const real* restrict w3 = w + (size_t)min(j + 3, j_end - 1) * nIn;
            realV s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
            realV s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
            for (int k = 0; k < kv; k++)
            {
                const realV u0 = vloadV(k, w0), u1 = vloadV(k, w1), u2 = vloadV(k, w2), u3 = vloadV(k, w3);
                realV p = vloadV(k, x0);
                s00 = fma(p, u0, s00); s01 = fma(p, u1, s01); s02 = fma(p, u2, s02); s03 = fma(p, u3, s03);
                p = vloadV(k, x1);
                s10 = fma(p, u0, s10); s11 = fma(p, u1, s11); s12 = fma(p, u2, s12); s13 = fma(p, u3, s13);
                p = vloadV(k, x2);
                s20 = fma(p, u0, s20); s21 = fma(p, u1, s21); s22 = fma(p, u2, s22); s23 = fma(p, u3, s23);
                p = vloadV(k, x3);
                s30 = fma(p, u0, s30); s31 = fma(p, u1, s31); s32 = fma(p, u2, s32); s33 = fma(p, u3, s33);
            }
            // one vector per sample, the 4 outputs across its lanes
            real4 z0 = hsum4(s00, s01, s02, s03), z1 = hsum4(s10, s11, s12, s13);
            real4 z2 = hsum4(s20, s21, s22, s23), z3 = hsum4(s30, s31, s32, s33);
            for (int k = kv * VW; k < nIn; k++)
            {
                const real4 u = (real4)(w0[k], w1[k], w2[k], w3[k]);
                z0 = fma((real4)x0[k], u, z0); z1 = fma((real4)x1[k], u, z1);
                z2 = fma((real4)x2[k], u, z2); z3 = fma((real4)x3[k], u, z3);
            }
            const real4 bias = (real4)(b[j], b[min(j + 1, j_end - 1)], b[min(j + 2, j_end - 1)], b[min(j + 3, j_end - 1)]);
            z0 += bias; z1 += bias; z2 += bias; z3 += bias;
            if (relu)
            {
                // !(z > 0) -> 0, as the reference's relu (a NaN becomes 0 there too)
                z0 = select((real4)0, z0, z0 > (real4)0); z1 = select((real4)0, z1, z1 > (real4)0);
                z2 = select((real4)0, z2, z2 > (real4)0); z3 = select((real4)0, z3, z3 > (real4)0);
            }
            const int rows = min(4, i_end - i), cols = min(4, j_end - j);
            real zs[4][4];
            vstore4(z0, 0, zs[0]); vstore4(z1, 0, zs[1]); vstore4(z2, 0, zs[2]); vstore4(z3, 0, zs[3]);
            for (int t = 0; t < rows; t++)
            {
                __global real* restrict out = a_out + (size_t)(i + t) * nOut + j;
                if (cols == 4) vstore4(vload4(0, zs[t]), 0, out);
                else for (int c = 0; c < cols; c++) out[c] = zs[t][c];
            }
        }
    }
}

// The shared body of the weight- and input-gradient kernels, an outer-product accumulation
//   coef (nS, nR) read as coef[s * cs + r * cr], q (nS,nIn) -> out (nR,nIn) = sum over s of coef[s][r] q[s]
// and, when mask != 0, out[r][k] = 0 wherever masks[r][k] <= 0 (relu'). Work-item (g0, g1) computes the
// columns [g0 * columns_per_item, +columns_per_item) (a multiple of STRIP) of the rows
// [g1 * rows_per_item, +rows_per_item) (a multiple of 4), strip by strip. A block is 4 rows x 4 vectors:
// per s, 4 broadcast coefficients and 4 vector loads of q feed 16 FMAs; the strip's rows of q (nS x STRIP)
// stay in cache while the item walks its blocks of rows. A ragged last strip runs 4 rows x 1 vector, then
// the nIn % VW columns as scalars.
inline void outer_accumulate(__global real* restrict out, __global const real* restrict coef, const int cs, const int cr,
                             __global const real* restrict q, __global const real* restrict masks, const int mask,
                             const int nS, const int nR, const int nIn, const int rows_per_item, const int columns_per_item)
{
    const int k_begin = get_global_id(0) * columns_per_item, r_begin = get_global_id(1) * rows_per_item;
    const int k_end = min(nIn, k_begin + columns_per_item), r_end = min(nR, r_begin + rows_per_item);
    for (int k0 = k_begin; k0 < k_end; k0 += STRIP)
    {
        const int width = min(STRIP, k_end - k0);
        for (int r = r_begin; r < r_end; r += 4)
        {
            const int ra = r, rb = min(r + 1, r_end - 1), rc = min(r + 2, r_end - 1), rd = min(r + 3, r_end - 1);
            const int rows = min(4, r_end - r);
            __global real* restrict o0 = out + (size_t)ra * nIn + k0;
            __global real* restrict o1 = out + (size_t)rb * nIn + k0;
            __global real* restrict o2 = out + (size_t)rc * nIn + k0;
            __global real* restrict o3 = out + (size_t)rd * nIn + k0;
            __global const real* restrict m0 = masks + (size_t)ra * nIn + k0;
            __global const real* restrict m1 = masks + (size_t)rb * nIn + k0;
            __global const real* restrict m2 = masks + (size_t)rc * nIn + k0;
            __global const real* restrict m3 = masks + (size_t)rd * nIn + k0;
            if (width == STRIP)
            {
                realV a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
                realV c0 = 0, c1 = 0, c2 = 0, c3 = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0;
                __global const real* restrict qs = q + k0;
                for (int s = 0; s < nS; s++, qs += nIn)
                {
                    __global const real* restrict cf = coef + (size_t)s * cs;
                    const realV p0 = vloadV(0, qs), p1 = vloadV(1, qs), p2 = vloadV(2, qs), p3 = vloadV(3, qs);
                    realV e = (realV)cf[ra * cr];
                    a0 = fma(e, p0, a0); a1 = fma(e, p1, a1); a2 = fma(e, p2, a2); a3 = fma(e, p3, a3);
                    e = (realV)cf[rb * cr];
                    b0 = fma(e, p0, b0); b1 = fma(e, p1, b1); b2 = fma(e, p2, b2); b3 = fma(e, p3, b3);
                    e = (realV)cf[rc * cr];
                    c0 = fma(e, p0, c0); c1 = fma(e, p1, c1); c2 = fma(e, p2, c2); c3 = fma(e, p3, c3);
                    e = (realV)cf[rd * cr];
                    d0 = fma(e, p0, d0); d1 = fma(e, p1, d1); d2 = fma(e, p2, d2); d3 = fma(e, p3, d3);
                }
                if (mask)
                {
                    a0 = select((realV)0, a0, vloadV(0, m0) > (realV)0); a1 = select((realV)0, a1, vloadV(1, m0) > (realV)0);
                    a2 = select((realV)0, a2, vloadV(2, m0) > (realV)0); a3 = select((realV)0, a3, vloadV(3, m0) > (realV)0);
                    b0 = select((realV)0, b0, vloadV(0, m1) > (realV)0); b1 = select((realV)0, b1, vloadV(1, m1) > (realV)0);
                    b2 = select((realV)0, b2, vloadV(2, m1) > (realV)0); b3 = select((realV)0, b3, vloadV(3, m1) > (realV)0);
                    c0 = select((realV)0, c0, vloadV(0, m2) > (realV)0); c1 = select((realV)0, c1, vloadV(1, m2) > (realV)0);
                    c2 = select((realV)0, c2, vloadV(2, m2) > (realV)0); c3 = select((realV)0, c3, vloadV(3, m2) > (realV)0);
                    d0 = select((realV)0, d0, vloadV(0, m3) > (realV)0); d1 = select((realV)0, d1, vloadV(1, m3) > (realV)0);
                    d2 = select((realV)0, d2, vloadV(2, m3) > (realV)0); d3 = select((realV)0, d3, vloadV(3, m3) > (realV)0);
                }
                // rows past r_end repeat row r_end - 1: computed, never stored
                if (rows > 3) { vstoreV(d0, 0, o3); vstoreV(d1, 1, o3); vstoreV(d2, 2, o3); vstoreV(d3, 3, o3); }
                if (rows > 2) { vstoreV(c0, 0, o2); vstoreV(c1, 1, o2); vstoreV(c2, 2, o2); vstoreV(c3, 3, o2); }
                if (rows > 1) { vstoreV(b0, 0, o1); vstoreV(b1, 1, o1); vstoreV(b2, 2, o1); vstoreV(b3, 3, o1); }
                vstoreV(a0, 0, o0); vstoreV(a1, 1, o0); vstoreV(a2, 2, o0); vstoreV(a3, 3, o0);
                continue;
            }
            // a ragged last strip: whole vectors one at a time, then single columns
            const int wv = width / VW;
            for (int v = 0; v < wv; v++)
            {
                realV a = 0, bb = 0, c = 0, d = 0;
                __global const real* restrict qs = q + k0 + v * VW;
                for (int s = 0; s < nS; s++, qs += nIn)
                {
                    __global const real* restrict cf = coef + (size_t)s * cs;
                    const realV p = vloadV(0, qs);
                    a = fma((realV)cf[ra * cr], p, a); bb = fma((realV)cf[rb * cr], p, bb);
                    c = fma((realV)cf[rc * cr], p, c); d = fma((realV)cf[rd * cr], p, d);
                }
                if (mask)
                {
                    a = select((realV)0, a, vloadV(v, m0) > (realV)0); bb = select((realV)0, bb, vloadV(v, m1) > (realV)0);
                    c = select((realV)0, c, vloadV(v, m2) > (realV)0); d = select((realV)0, d, vloadV(v, m3) > (realV)0);
                }
                if (rows > 3) vstoreV(d, v, o3);
                if (rows > 2) vstoreV(c, v, o2);
                if (rows > 1) vstoreV(bb, v, o1);
                vstoreV(a, v, o0);
            }
            for (int k = wv * VW; k < width; k++)
            {
                real4 a = 0;
                __global const real* restrict qs = q + k0 + k;
                for (int s = 0; s < nS; s++, qs += nIn)
                {
                    __global const real* restrict cf = coef + (size_t)s * cs;
                    a = fma((real4)(cf[ra * cr], cf[rb * cr], cf[rc * cr], cf[rd * cr]), (real4)*qs, a);
                }
                if (mask) a = select((real4)0, a, (real4)(m0[k], m1[k], m2[k], m3[k]) > (real4)0);
                if (rows > 3) o3[k] = a.w;
                if (rows > 2) o2[k] = a.z;
                if (rows > 1) o1[k] = a.y;
                o0[k] = a.x;
            }
        }
    }
}

// mirrors the dw part of Reference.LinearBackward summed over the batch (dz already carries 1/n);
// the CPU variant of minibatch.cl's layer_backward_weights:
//   dz (n,nOut), a_in (n,nIn) -> dw (nOut,nIn) = dz^T a_in (overwritten, not accumulated across steps)
// outer_accumulate with s = sample, r = output unit: coef[s][r] = dz[s * nOut + r], q = a_in.
__kernel void layer_backward_weights_cpu(__global real* restrict dw, __global const real* restrict dz, __global const real* restrict a_in,
                                         const int n, const int nIn, const int nOut, const int rows_per_item, const int columns_per_item)
{
    outer_accumulate(dw, dz, nOut, 1, a_in, a_in, 0, n, nOut, nIn, rows_per_item, columns_per_item);
}

// mirrors the dx part of Reference.LinearBackward, then Reference.ReluBackward (layers after the first); the
// CPU variant of minibatch.cl's layer_backward_input:
//   dz (n,nOut), w (nOut,nIn), a_in (n,nIn) -> dz_in (n,nIn) = (dz w) * relu'(z_in)
// outer_accumulate with s = output unit, r = sample: coef[s][r] = dz[r * nOut + s], q = w; the mask reads
// the layer's input activations (a_in = relu(z_in) > 0 exactly when z_in > 0).
__kernel void layer_backward_input_cpu(__global real* restrict dz_in, __global const real* restrict dz, __global const real* restrict w,
                                       __global const real* restrict a_in, const int n, const int nIn, const int nOut,
                                       const int rows_per_item, const int columns_per_item)
{
    outer_accumulate(dz_in, dz, 1, nOut, w, a_in, 1, nOut, n, nIn, rows_per_item, columns_per_item);
}
