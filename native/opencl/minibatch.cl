// minibatch.cl: mini-batch training of an MLP of any depth (sizes [784, h1, ..., 10]) on batches of sample
// indices; the host side is LayerKernels (src/MnistNative.Backends.OpenCL). Each kernel mirrors a piece of the
// clean reference, Reference (src/MnistNative.Backends.Cpu/Reference), or OptimizerMath.Apply
// (src/MnistNative.Core), and says which. Matrices are row-major; weights keep the seed's orientation, w (out, in). A layer's
// activations and gradients are (n, width) with one row per sample of the batch.
// The host compiles with -D REAL=float|double (plus -D USE_F64 for double) and -D TILE=16. This file stands
// alone (it does not need common.cl and its single-hidden-layer defines).
#ifdef USE_F64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

typedef REAL real;

#define IN 784
#define OUT 10

// The matrix kernels run TILE x TILE work-groups and stage TILE x TILE blocks of both operands in local
// memory; the +1 column keeps a work-group's column reads on distinct local-memory banks on a GPU.
#define TILE_PAD (TILE + 1)

// mirrors the reference's input scale (x = byte / 255) for a batch; also the
// "gather rows by index" step of layer 1, done once per step so that the forward and the weight gradient of
// layer 1 both read plain rows:
//   pixels (N,784) uchar, idx (n) -> x (n,784)
__kernel void gather_input(__global real* x, __global const uchar* pixels, __global const int* idx, const int n)
{
    const int k = get_global_id(0), i = get_global_id(1);
    if (k >= IN || i >= n) return;
    x[(size_t)i * IN + k] = (real)pixels[(size_t)idx[i] * IN + k] / (real)255;
}

// mirrors Reference.LinearForward, then Reference.ReluForward for hidden layers, for n samples:
//   a_in (n,nIn), w (nOut,nIn), b (nOut) -> a_out (n,nOut) = a_in w^T + b, then relu(.) when relu != 0
// (hidden layers; the output layer keeps the logits z). Work-item (j, i) computes a_out[i][j].
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void layer_forward(__global real* a_out, __global const real* a_in, __global const real* w, __global const real* b,
                   const int n, const int nIn, const int nOut, const int relu)
{
    const int tj = get_local_id(0), ti = get_local_id(1);
    const int j0 = get_group_id(0) * TILE, i0 = get_group_id(1) * TILE;
    __local real xs[TILE][TILE_PAD]; // [sample][k]
    __local real ws[TILE][TILE_PAD]; // [out][k]
    real sum = 0;
    for (int k0 = 0; k0 < nIn; k0 += TILE)
    {
        const int k = k0 + tj;
        xs[ti][tj] = (i0 + ti < n && k < nIn) ? a_in[(size_t)(i0 + ti) * nIn + k] : (real)0;
        ws[ti][tj] = (j0 + ti < nOut && k < nIn) ? w[(size_t)(j0 + ti) * nIn + k] : (real)0;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TILE; kk++) sum += xs[ti][kk] * ws[tj][kk];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int i = i0 + ti, j = j0 + tj;
    if (i >= n || j >= nOut) return;
    const real z = sum + b[j];
    a_out[(size_t)i * nOut + j] = relu && !(z > 0) ? (real)0 : z;
}

// mirrors Reference.SoftmaxCrossEntropy (softmax, the argmax count, the loss and dz = (p - onehot) / n) for
// one sample per work-item:
//   z (n,10), labels (N), idx (n) -> dz (n,10); metrics (n,2) = [correct 0|1, loss]
// The loss is logsumexp(z) - z[y] = (max + log(sum exp(z - max))) - z[y], finite even when p[y] underflows.
__kernel void softmax_cross_entropy_backward(__global real* dz, __global real* metrics, __global const real* z,
                                             __global const uchar* labels, __global const int* idx, const int n, const real inv_n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    __global const real* zi = z + (size_t)i * OUT;
    const int y = labels[idx[i]];
    int best = 0;
    for (int c = 1; c < OUT; c++) if (zi[c] > zi[best]) best = c; // first maximum, as the reference's ArgMax
    const real max = zi[best];
    real e[OUT], sum = 0;
    for (int c = 0; c < OUT; c++) { e[c] = exp(zi[c] - max); sum += e[c]; }
    for (int c = 0; c < OUT; c++) dz[(size_t)i * OUT + c] = (e[c] / sum - (c == y ? (real)1 : (real)0)) * inv_n;
    metrics[2 * i] = best == y ? (real)1 : (real)0;
    metrics[2 * i + 1] = (max + log(sum)) - zi[y];
}

// mirrors the dw part of Reference.LinearBackward summed over the batch (dz already carries 1/n):
//   dz (n,nOut), a_in (n,nIn) -> dw (nOut,nIn) = dz^T a_in (overwritten, not accumulated across steps)
// Work-item (k, j) computes dw[j][k]; the reduction runs over the samples in tiles.
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void layer_backward_weights(__global real* dw, __global const real* dz, __global const real* a_in,
                            const int n, const int nIn, const int nOut)
{
    const int tk = get_local_id(0), tj = get_local_id(1);
    const int k0 = get_group_id(0) * TILE, j0 = get_group_id(1) * TILE;
    __local real dzs[TILE][TILE_PAD]; // [sample][out]
    __local real xs[TILE][TILE_PAD];  // [sample][k]
    real sum = 0;
    for (int i0 = 0; i0 < n; i0 += TILE)
    {
        const int i = i0 + tj; // this work-item loads row i of both tiles
        dzs[tj][tk] = (i < n && j0 + tk < nOut) ? dz[(size_t)i * nOut + j0 + tk] : (real)0;
        xs[tj][tk] = (i < n && k0 + tk < nIn) ? a_in[(size_t)i * nIn + k0 + tk] : (real)0;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int ii = 0; ii < TILE; ii++) sum += dzs[ii][tj] * xs[ii][tk];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int j = j0 + tj, k = k0 + tk;
    if (j < nOut && k < nIn) dw[(size_t)j * nIn + k] = sum;
}

// mirrors the db part of Reference.LinearBackward summed over the batch, samples in order:
//   dz (n,nOut) -> db (nOut) = sum over samples of dz
__kernel void layer_backward_bias(__global real* db, __global const real* dz, const int n, const int nOut)
{
    const int j = get_global_id(0);
    if (j >= nOut) return;
    real sum = 0;
    for (int i = 0; i < n; i++) sum += dz[(size_t)i * nOut + j];
    db[j] = sum;
}

// mirrors the dx part of Reference.LinearBackward, then Reference.ReluBackward (layers after the first):
//   dz (n,nOut), w (nOut,nIn), a_in (n,nIn) -> dz_in (n,nIn) = (dz w) * relu'(z_in)
// The mask reads the layer's input activations: a_in = relu(z_in) > 0 exactly when z_in > 0.
// Work-item (k, i) computes dz_in[i][k]; the reduction runs over the outputs in tiles.
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void layer_backward_input(__global real* dz_in, __global const real* dz, __global const real* w, __global const real* a_in,
                          const int n, const int nIn, const int nOut)
{
    const int tk = get_local_id(0), ti = get_local_id(1);
    const int k0 = get_group_id(0) * TILE, i0 = get_group_id(1) * TILE;
    __local real dzs[TILE][TILE_PAD]; // [sample][out]
    __local real ws[TILE][TILE_PAD];  // [out][k]
    real sum = 0;
    for (int j0 = 0; j0 < nOut; j0 += TILE)
    {
        dzs[ti][tk] = (i0 + ti < n && j0 + tk < nOut) ? dz[(size_t)(i0 + ti) * nOut + j0 + tk] : (real)0;
        ws[ti][tk] = (j0 + ti < nOut && k0 + tk < nIn) ? w[(size_t)(j0 + ti) * nIn + k0 + tk] : (real)0;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int jj = 0; jj < TILE; jj++) sum += dzs[ti][jj] * ws[jj][tk];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int i = i0 + ti, k = k0 + tk;
    if (i >= n || k >= nIn) return;
    const size_t at = (size_t)i * nIn + k;
    dz_in[at] = a_in[at] > 0 ? sum : (real)0;
}

// mirrors Reference.Softmax for one sample per work-item (Predict):
//   z (n,10) -> p (n,10)
__kernel void softmax(__global real* p, __global const real* z, const int n)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    __global const real* zi = z + (size_t)i * OUT;
    real max = zi[0];
    for (int c = 1; c < OUT; c++) max = fmax(max, zi[c]);
    real e[OUT], sum = 0;
    for (int c = 0; c < OUT; c++) { e[c] = exp(zi[c] - max); sum += e[c]; }
    for (int c = 0; c < OUT; c++) p[(size_t)i * OUT + c] = e[c] / sum;
}

// mirrors OptimizerMath.Apply, case Gd, one element per work-item:
//   w (count), g (count) -> w -= lr (g + wd w)
__kernel void gd_update(__global real* w, __global const real* g, const int count, const real lr, const real wd)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    w[i] -= lr * (g[i] + wd * w[i]);
}

// mirrors OptimizerMath.Apply, case Momentum (torch.optim.SGD's heavy ball):
//   w, g, m (count) -> m = mu m + (g + wd w); w -= lr m
__kernel void momentum_update(__global real* w, __global const real* g, __global real* m, const int count,
                              const real lr, const real wd, const real mu)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const real mi = mu * m[i] + (g[i] + wd * w[i]);
    m[i] = mi;
    w[i] -= lr * mi;
}

// mirrors OptimizerMath.Apply, case Adam; step_size and inv_sqrt_bc2 come from OptimizerMath.AdamScales on
// the host (they depend only on the step count t):
//   w, g, m, v (count) -> gi = g + wd w; m = b1 m + (1 - b1) gi; v = b2 v + (1 - b2) gi^2;
//                         w -= step_size m / (sqrt(v) inv_sqrt_bc2 + eps)
__kernel void adam_update(__global real* w, __global const real* g, __global real* m, __global real* v, const int count,
                          const real wd, const real b1, const real b2, const real step_size, const real inv_sqrt_bc2, const real eps)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const real gi = g[i] + wd * w[i];
    const real mi = b1 * m[i] + ((real)1 - b1) * gi;
    const real vi = b2 * v[i] + ((real)1 - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] -= step_size * mi / (sqrt(vi) * inv_sqrt_bc2 + eps);
}
