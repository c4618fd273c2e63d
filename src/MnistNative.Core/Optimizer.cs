namespace MnistNative.Core;

public enum OptimizerKind
{
    /// <summary>Plain gradient descent, w -= lr * g (the seed's update).</summary>
    Gd,

    /// <summary>Heavy-ball momentum as torch.optim.SGD: v = mu v + g; w -= lr v.</summary>
    Momentum,

    /// <summary>Adam (Kingma and Ba) with bias correction, as torch.optim.Adam.</summary>
    Adam,
}

/// <summary>
/// The optimizer and its constants. Weight decay is the L2 kind that torch's SGD and Adam apply: g += wd * w
/// before the moments.
/// </summary>
public sealed record OptimizerSettings(OptimizerKind Kind = OptimizerKind.Gd, double Momentum = 0.9, double Beta1 = 0.9,
    double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0)
{
    public static OptimizerSettings Gd { get; } = new();

    /// <summary>Moment buffers the optimizer keeps per parameter: 0 (gd), 1 (momentum), 2 (Adam).</summary>
    public int MomentCount => Kind switch { OptimizerKind.Gd => 0, OptimizerKind.Momentum => 1, _ => 2 };

    public void Validate()
    {
        if (!(Momentum >= 0 && Momentum < 1))
            throw new ArgumentException($"--momentum must be in [0, 1), got {Momentum}");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentException($"--beta1 must be in [0, 1), got {Beta1}");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentException($"--beta2 must be in [0, 1), got {Beta2}");
        if (!(Epsilon > 0 && double.IsFinite(Epsilon)))
            throw new ArgumentException($"--epsilon must be a positive number, got {Epsilon}");
        if (!(WeightDecay >= 0 && double.IsFinite(WeightDecay)))
            throw new ArgumentException($"--weight-decay must be zero or positive, got {WeightDecay}");
    }
}

/// <summary>
/// The optimizer's per-element rules, written once in scalar form: the reference backend calls them, and the
/// SIMD backend's vector loops mirror them term by term (see LayerPath.Update).
/// </summary>
public static class OptimizerMath
{
    /// <summary>
    /// Adam's bias-corrected step size and epsilon for step t (1-based):
    /// w -= stepSize * m / (sqrt(v) * invSqrtBc2 + eps), which is lr * mhat / (sqrt(vhat) + eps) with
    /// mhat = m / (1 - b1^t), vhat = v / (1 - b2^t).
    /// </summary>
    public static (double StepSize, double InvSqrtBc2) AdamScales(double lr, double beta1, double beta2, long t)
    {
        double bc1 = 1 - Math.Pow(beta1, t);
        double bc2 = 1 - Math.Pow(beta2, t);
        return (lr / bc1, 1 / Math.Sqrt(bc2));
    }

    /// <summary>
    /// Applies one update to <paramref name="w"/> in place from the gradient <paramref name="g"/>, with moment
    /// buffers m (momentum, Adam) and v (Adam). t is the 1-based step number (Adam's bias correction).
    /// </summary>
    public static void Apply<T>(OptimizerSettings o, double lr, long t, Span<T> w, ReadOnlySpan<T> g, Span<T> m,
        Span<T> v)
        where T : System.Numerics.IFloatingPointIeee754<T>
    {
        T wd = T.CreateChecked(o.WeightDecay), rate = T.CreateChecked(lr);
        switch (o.Kind)
        {
            case OptimizerKind.Gd:
                for (int i = 0; i < w.Length; i++) w[i] -= rate * (g[i] + wd * w[i]);
                break;
            case OptimizerKind.Momentum:
            {
                T mu = T.CreateChecked(o.Momentum);
                for (int i = 0; i < w.Length; i++)
                {
                    m[i] = mu * m[i] + (g[i] + wd * w[i]);
                    w[i] -= rate * m[i];
                }
                break;
            }
            case OptimizerKind.Adam:
            {
                var (stepSize, invSqrtBc2) = AdamScales(lr, o.Beta1, o.Beta2, t);
                T b1 = T.CreateChecked(o.Beta1), b2 = T.CreateChecked(o.Beta2), one = T.One;
                T step = T.CreateChecked(stepSize), inv = T.CreateChecked(invSqrtBc2), eps = T.CreateChecked(o.Epsilon);
                for (int i = 0; i < w.Length; i++)
                {
                    T gi = g[i] + wd * w[i];
                    m[i] = b1 * m[i] + (one - b1) * gi;
                    v[i] = b2 * v[i] + (one - b2) * gi * gi;
                    w[i] -= step * m[i] / (T.Sqrt(v[i]) * inv + eps);
                }
                break;
            }
        }
    }
}

public enum ScheduleKind
{
    Constant,

    /// <summary>x0.1 at half and again at three quarters of the run.</summary>
    Step,

    /// <summary>Half a cosine from the base rate down to zero over the steps after the warm-up.</summary>
    Cosine,
}

/// <summary>
/// Learning rate as a function of the 0-based step, with a linear warm-up over the first WarmupSteps.
/// </summary>
public sealed record LearningRateSchedule(ScheduleKind Kind, double BaseRate, long TotalSteps, long WarmupSteps = 0)
{
    public static LearningRateSchedule Constant(double lr) => new(ScheduleKind.Constant, lr, 0);

    public double Rate(long step)
    {
        if (step < WarmupSteps) return BaseRate * (step + 1) / WarmupSteps;
        double span = Math.Max(1, TotalSteps - WarmupSteps);
        double progress = Math.Clamp((step - WarmupSteps) / span, 0, 1);
        return Kind switch
        {
            ScheduleKind.Step => BaseRate * (progress < 0.5 ? 1 : progress < 0.75 ? 0.1 : 0.01),
            ScheduleKind.Cosine => BaseRate * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => BaseRate,
        };
    }
}

/// <summary>
/// The optimizer's state between steps: the step count (Adam's t) and the moment buffers in the weights'
/// shapes (float64 on the host, as <see cref="MlpParameters"/>).
/// </summary>
public sealed class OptimizerState(long steps, MlpParameters[] moments)
{
    public long Steps { get; } = steps;
    public MlpParameters[] Moments { get; } = moments;
}
