// reduce_update.cl: sums the per-group gradient partials, divides by n, and optionally takes the step.
// mirrors the mean over the batch (the 1/n of Reference.SoftmaxCrossEntropy's dz), then OptimizerMath.Apply
// for gradient descent without weight decay:
//   partials (groups, partial_stride) holding parameters first .. PARAM_COUNT - 1, params (PARAM_COUNT)
//   -> grads[first ..] = sum / n; params -= lr * grads when apply != 0.
// first is 0 after forward_backward_*; B1_OFF after sparse_forward_cpu, whose dw1 is complete without partials.
// One work-item per parameter: consecutive items read consecutive addresses of every group's slice.
__kernel void reduce_update(__global const real* partials, const int groups, const int partial_stride,
                            __global real* params, __global real* grads, const real inv_n, const real lr,
                            const int apply, const int first)
{
    const int p = first + (int)get_global_id(0);
    if (p >= PARAM_COUNT) return;
    real sum = 0;
    for (int g = 0; g < groups; g++) sum += partials[(size_t)g * partial_stride + (p - first)];
    const real grad = sum * inv_n;
    grads[p] = grad;
    if (apply) params[p] -= lr * grad;
}
