// reduce_update.cl: sums the per-group gradient partials, divides by n, and optionally takes the step.
// mirrors the mean over the batch (the 1/n of Reference.SoftmaxCrossEntropy's dz), then OptimizerMath.Apply
// for gradient descent without weight decay:
//   partials (groups, partial_stride), params (PARAM_COUNT) -> grads (PARAM_COUNT) = sum / n;
//   params -= lr * grads when apply != 0.
// One work-item per parameter: consecutive items read consecutive addresses of every group's slice.
__kernel void reduce_update(__global const real* partials, const int groups, const int partial_stride,
                            __global real* params, __global real* grads, const real inv_n, const real lr,
                            const int apply)
{
    const int p = get_global_id(0);
    if (p >= PARAM_COUNT) return;
    real sum = 0;
    for (int g = 0; g < groups; g++) sum += partials[(size_t)g * partial_stride + p];
    const real grad = sum * inv_n;
    grads[p] = grad;
    if (apply) params[p] -= lr * grad;
}
