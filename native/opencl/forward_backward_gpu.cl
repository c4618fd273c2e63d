// forward_backward_gpu.cl: the GPU variant, many work-items, fused over tiles of TILE samples.
// mirrors, fused for a 784-H-10 network: the input scale x / 255, Reference.LinearForward +
// Reference.ReluForward (hidden layer), Reference.LinearForward (output layer), Reference.SoftmaxCrossEntropy,
// Reference.LinearBackward (output layer), Reference.ReluBackward and Reference.LinearBackward (hidden layer),
// summed over samples (reduce_update divides by n):
//   pixels (n,784) uchar, labels (n), params [w1 (H,784) | b1 (H) | w2 (10,H) | b2 (10)]
//   -> partials (groups, partial_stride) [dw1 (H,784) | db1 (H) | dw2 (10,H) | db2 (10)] summed over the
//      group's samples, metrics (groups, 2) = (correct, loss sum).
// A work-group of WG items walks tiles g, g + groups, ... (persistent groups, so the partials buffer stays
// groups * params long whatever n is). Per tile it stages the pixels in local memory with coalesced
// loads, runs the forward and the backward pass in local memory, then reduces the tile's weight gradient:
// item p owns parameters p, p + WG, ... of its group's slice, so consecutive items touch consecutive
// addresses and no two items ever write the same one (no atomics, no barrier on global memory).
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void forward_backward_gpu(__global const uchar* pixels, __global const uchar* labels, const int n,
                          const int samples_per_group, __global const real* params,
                          __global real* partials, const int partial_stride, __global real* metrics)
{
    __local real xl[TILE * IN];
    __local real z1l[TILE * H];
    __local real dz1l[TILE * H];
    __local real dz2l[TILE * OUT];
    __local real lossl[WG];
    __local int correctl[WG];

    const int lid = get_local_id(0);
    const int g = get_group_id(0);
    const int groups = get_num_groups(0);
    const int tiles = (n + TILE - 1) / TILE;
    __global const real* w1 = params + W1_OFF;
    __global const real* b1 = params + B1_OFF;
    __global const real* w2 = params + W2_OFF;
    __global const real* b2 = params + B2_OFF;
    __global real* slice = partials + (size_t)g * partial_stride;
    for (int p = lid; p < PARAM_COUNT; p += WG) slice[p] = 0;

    int correct = 0;
    real loss = 0;
    for (int tile = g; tile < tiles; tile += groups)
    {
        const int s0 = tile * TILE;
        const int ts = min(TILE, n - s0);
        __global const uchar* xt = pixels + (size_t)s0 * IN;
        for (int i = lid; i < TILE * IN; i += WG) xl[i] = i < ts * IN ? (real)xt[i] / (real)255 : (real)0;
        barrier(CLK_LOCAL_MEM_FENCE);

        // LinearForward (hidden): z1 = x w1^T + b1, one (sample, unit) dot product per item
        for (int i = lid; i < TILE * H; i += WG)
        {
            const int s = i / H, j = i % H;
            __global const real* wj = w1 + j * IN;
            __local const real* xs = xl + s * IN;
            realV acc = 0;
            for (int k = 0; k < IN_V; k++) acc = mad(vloadV(k, wj), vloadV(k, xs), acc);
            z1l[i] = hsum(acc) + b1[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        // LinearForward (output) + SoftmaxCrossEntropy, one sample per item
        for (int s = lid; s < TILE; s += WG)
        {
            real dz2[OUT];
            if (s < ts)
            {
                real a1[H];
                for (int j = 0; j < H; j++) a1[j] = max(z1l[s * H + j], (real)0);
                output_forward_backward(dz2, a1, w2, b2, labels[s0 + s], &correct, &loss);
            }
            else
            {
                for (int c = 0; c < OUT; c++) dz2[c] = 0;
            }
            for (int c = 0; c < OUT; c++) dz2l[s * OUT + c] = dz2[c];
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        // LinearBackward (output, dx) + ReluBackward: dz1 = (dz2 w2) * relu'(z1)
        for (int i = lid; i < TILE * H; i += WG)
        {
            const int s = i / H, j = i % H;
            real d = 0;
            if (s < ts && z1l[i] > 0)
                for (int c = 0; c < OUT; c++) d += w2[c * H + j] * dz2l[s * OUT + c];
            dz1l[i] = d;
        }
        barrier(CLK_LOCAL_MEM_FENCE);

        // The tile's share of every gradient, summed over its samples in local memory.
        for (int p = lid; p < PARAM_COUNT; p += WG)
        {
            real acc = 0;
            if (p < B1_OFF)
            {
                const int j = p / IN, k = p - j * IN;      // dw1 += dz1^T x
                for (int s = 0; s < TILE; s++) acc += dz1l[s * H + j] * xl[s * IN + k];
            }
            else if (p < W2_OFF)
            {
                const int j = p - B1_OFF;                   // db1 += dz1
                for (int s = 0; s < TILE; s++) acc += dz1l[s * H + j];
            }
            else if (p < B2_OFF)
            {
                const int c = (p - W2_OFF) / H, j = (p - W2_OFF) % H;  // dw2 += dz2^T a1
                for (int s = 0; s < TILE; s++) acc += dz2l[s * OUT + c] * max(z1l[s * H + j], (real)0);
            }
            else
            {
                const int c = p - B2_OFF;                   // db2 += dz2
                for (int s = 0; s < TILE; s++) acc += dz2l[s * OUT + c];
            }
            slice[p] += acc;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    lossl[lid] = loss;
    correctl[lid] = correct;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = WG / 2; width > 0; width /= 2)
    {
        if (lid < width)
        {
            lossl[lid] += lossl[lid + width];
            correctl[lid] += correctl[lid + width];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
    {
        metrics[2 * g] = (real)correctl[0];
        metrics[2 * g + 1] = lossl[0];
    }
}
