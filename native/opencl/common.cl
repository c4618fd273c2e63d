// common.cl: definitions shared by every MnistNative kernel; the host prepends it to each program.
// The host compiles with -D REAL=float|double, -D H=<hidden width>, -D VW=<4|8|16 vector width>
// (plus -D USE_F64 for double) so that every private array below has a compile-time size.
#ifdef USE_F64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

typedef REAL real;

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define realV CAT(REAL, VW)
#define real2 CAT(REAL, 2)
#define real4 CAT(REAL, 4)
#define real8 CAT(REAL, 8)
#define vloadV CAT(vload, VW)
#define vstoreV CAT(vstore, VW)
#define convert_realV CAT(convert_, realV)

#define IN 784
#define OUT 10
// 784 = 49 * 16, so an image row is a whole number of float4/8/16 vectors and, with buffers aligned to
// 128 bytes (what PoCL and GPUs report), every row of w1, dw1 and x starts 64-byte aligned.
#define IN_V (IN / VW)

// Reference.SoftmaxCrossEntropyForward and the softmax part of SoftmaxCrossEntropyBackward over one vector of
// samples (type T, a lane per sample), for the kernels that keep samples across the lanes: z2[OUT] holds the
// logits and becomes dz2 = (softmax - onehot(y)) * valid; adds the correct predictions (first argmax on ties,
// as the reference) and the loss logsumexp(z2) - z2[y] of the valid lanes through HSUM.
#define SOFTMAX_CROSS_ENTROPY(T, HSUM, z2, y, valid, correct, loss)                                             \
    do                                                                                                          \
    {                                                                                                           \
        T best_ = z2[0], arg_ = 0, zy_ = select((T)0, z2[0], y == (T)0);                                        \
        for (int c_ = 1; c_ < OUT; c_++)                                                                        \
        {                                                                                                       \
            const T cv_ = (T)c_;                                                                                \
            arg_ = select(arg_, cv_, z2[c_] > best_);                                                           \
            best_ = fmax(best_, z2[c_]);                                                                        \
            zy_ = select(zy_, z2[c_], y == cv_);                                                                \
        }                                                                                                       \
        correct += (int)HSUM(select((T)0, valid, arg_ == y));                                                   \
        T sum_ = 0;                                                                                             \
        for (int c_ = 0; c_ < OUT; c_++) { z2[c_] = exp(z2[c_] - best_); sum_ += z2[c_]; }                      \
        loss += HSUM(((best_ + log(sum_)) - zy_) * valid);                                                      \
        for (int c_ = 0; c_ < OUT; c_++) z2[c_] = (z2[c_] / sum_ - select((T)0, (T)1, y == (T)c_)) * valid;     \
    } while (0)

// One parameter buffer holds the whole model, in the seed's orientation:
// w1 (H,784) | b1 (H) | w2 (10,H) | b2 (10). Gradient partials use the same layout.
#define W1_OFF 0
#define B1_OFF (H * IN)
#define W2_OFF (B1_OFF + H)
#define B2_OFF (W2_OFF + OUT * H)
#define PARAM_COUNT (B2_OFF + OUT)

inline real hsum(realV v)
{
#if VW == 16
    real8 a = v.lo + v.hi;
    real4 b = a.lo + a.hi;
#elif VW == 8
    real4 b = v.lo + v.hi;
#elif VW == 4
    real4 b = v;
#else
#error VW must be 4, 8 or 16
#endif
    real2 c = b.lo + b.hi;
    return c.x + c.y;
}

// mirrors Reference.LinearForward (output layer) + Reference.SoftmaxCrossEntropy for one sample (without the
// mean's 1/n, which reduce_update applies): a1 (H), w2 (10,H), b2 (10), label y -> dz2 = softmax(z2) - onehot(y)
// (10); counts a correct argmax (first on ties) and adds the loss (max + log(sum exp(z2 - max))) - z2[y].
inline void output_forward_backward(real* dz2, const real* a1, __global const real* w2, __global const real* b2,
                                    int y, int* correct, real* loss)
{
    real z[OUT];
    for (int c = 0; c < OUT; c++)
    {
        real sum = 0;
        for (int j = 0; j < H; j++) sum += w2[c * H + j] * a1[j];
        z[c] = sum + b2[c];
    }
    int best = 0;
    for (int c = 1; c < OUT; c++) if (z[c] > z[best]) best = c;
    if (best == y) (*correct)++;
    real max = z[best], zy = z[y], sum = 0;
    for (int c = 0; c < OUT; c++) { z[c] = exp(z[c] - max); sum += z[c]; }
    *loss += (max + log(sum)) - zy;
    for (int c = 0; c < OUT; c++) dz2[c] = z[c] / sum - (c == y ? (real)1 : (real)0);
}
