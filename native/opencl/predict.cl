// predict.cl: forward-only inference, one work-item per image.
// mirrors the input scale x / 255, Reference.LinearForward + Reference.ReluForward (hidden layer),
// Reference.LinearForward (output layer) and Reference.Softmax:
//   pixels (n,784) uchar, params [w1 (H,784) | b1 (H) | w2 (10,H) | b2 (10)] -> probs (n,10)
__kernel void predict(__global const uchar* pixels, const int n, __global const real* params, __global real* probs)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    __global const real* w1 = params + W1_OFF;
    __global const real* b1 = params + B1_OFF;
    __global const real* w2 = params + W2_OFF;
    __global const real* b2 = params + B2_OFF;
    __global const uchar* xi = pixels + (size_t)i * IN;
    real a1[H];
    for (int j = 0; j < H; j++)
    {
        realV acc = 0;
        for (int k = 0; k < IN_V; k++) acc = mad(vloadV(k, w1 + j * IN), convert_realV(vloadV(k, xi)) / (real)255, acc);
        a1[j] = max(hsum(acc) + b1[j], (real)0);
    }
    real z[OUT];
    for (int c = 0; c < OUT; c++)
    {
        real sum = 0;
        for (int j = 0; j < H; j++) sum += w2[c * H + j] * a1[j];
        z[c] = sum + b2[c];
    }
    real max = z[0];
    for (int c = 1; c < OUT; c++) max = fmax(max, z[c]);
    real sum = 0;
    for (int c = 0; c < OUT; c++) { z[c] = exp(z[c] - max); sum += z[c]; }
    for (int c = 0; c < OUT; c++) probs[(size_t)i * OUT + c] = z[c] / sum;
}
