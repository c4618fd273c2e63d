using MnistNative.Backends;
using MnistNative.Core;
using MnistNative.Data;

namespace MnistNative.Benchmarks;

/// <summary>The seed's data and the backends this machine can run, shared by the suites.</summary>
public static class Workload
{
    private static readonly Lazy<(LabeledImages Train, LabeledImages Test)> Mnist = new(() =>
    {
        string dir = MnistAcquisition.ResolveDirectory(null);
        new MnistAcquisition(AcquisitionOptions.FromEnvironment()).Ensure(dir);
        return MnistFiles.Load(dir, verify: false);
    });

    public static LabeledImages Train => Mnist.Value.Train.Take(10_000);
    public static LabeledImages Test => Mnist.Value.Test;

    /// <summary>Every backend name except auto that can be created here (float32).</summary>
    public static IEnumerable<string> AvailableBackends()
    {
        foreach (string name in BackendCatalog.Backends)
        {
            ITrainingBackend? backend = null;
            try
            {
                backend = BackendCatalog.Create(BackendRequest.FullBatch(name, Precision.F32, 10, 10_000), _ => { });
            }
            catch (BackendUnavailableException) { continue; }
            finally { backend?.Dispose(); }
            yield return name;
        }
    }

    public static ITrainingBackend Open(string name, int hidden, LabeledImages train)
    {
        ITrainingBackend backend =
            BackendCatalog.Create(BackendRequest.FullBatch(name, Precision.F32, hidden, train.Count), _ => { });
        backend.Upload(train);
        backend.SetWeights(MlpParameters.Initialize([MlpParameters.InputSize, hidden, MlpParameters.Classes], 0));
        return backend;
    }
}
