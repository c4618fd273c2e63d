using MnistNative.Inference;

namespace MnistNative.Serving;

/// <summary>
/// The one shared classifier and its atomic swap. A request takes a lease (<see cref="Acquire"/>), classifies,
/// and releases it; <see cref="Swap"/> installs a new model at once for later requests, while requests that hold
/// the old one finish on it. The old classifier is disposed when its last lease is released, never under a call.
/// </summary>
public sealed class LiveModel : IDisposable
{
    private LoadedModel _current;
    private int _reloads;

    public LiveModel(MnistClassifier classifier, string source) =>
        _current = new LoadedModel(classifier, source, DateTimeOffset.UtcNow);

    /// <summary>The model now serving (for reporting; classify through a lease).</summary>
    public LoadedModel Current => Volatile.Read(ref _current);

    /// <summary>How many times a new model was swapped in.</summary>
    public int Reloads => Volatile.Read(ref _reloads);

    /// <summary>A lease on the model now serving; dispose it when the request is done with the classifier.</summary>
    public ModelLease Acquire()
    {
        while (true)
        {
            LoadedModel model = Volatile.Read(ref _current);
            if (model.TryAddLease())
                return new ModelLease(model);
            // a model swapped out and released between the read and here: read again; the current model itself
            // released means the LiveModel was disposed, and no model is left to lease
            if (ReferenceEquals(model, Volatile.Read(ref _current)))
                throw new ObjectDisposedException(nameof(LiveModel), "the served model has been disposed");
        }
    }

    /// <summary>Installs <paramref name="classifier"/> for every later request; the old one goes when unused.</summary>
    public void Swap(MnistClassifier classifier, string source)
    {
        var next = new LoadedModel(classifier, source, DateTimeOffset.UtcNow);
        LoadedModel previous = Interlocked.Exchange(ref _current, next);
        Interlocked.Increment(ref _reloads);
        previous.ReleaseLease(); // the holder's own lease
    }

    public void Dispose() => Volatile.Read(ref _current).ReleaseLease();
}

/// <summary>
/// A classifier with the file it came from and a count of leases (1 belongs to the <see cref="LiveModel"/>).
/// </summary>
public sealed class LoadedModel(MnistClassifier classifier, string source, DateTimeOffset loadedAt)
{
    private int _leases = 1;

    public MnistClassifier Classifier { get; } = classifier;
    public string Source { get; } = source;
    public DateTimeOffset LoadedAt { get; } = loadedAt;

    /// <summary>Whether the classifier has been disposed (its last lease released after a swap).</summary>
    public bool Retired => Volatile.Read(ref _leases) == 0;

    internal bool TryAddLease()
    {
        int leases = Volatile.Read(ref _leases);
        while (leases > 0)
        {
            int seen = Interlocked.CompareExchange(ref _leases, leases + 1, leases);
            if (seen == leases)
                return true;
            leases = seen;
        }
        return false;
    }

    internal void ReleaseLease()
    {
        if (Interlocked.Decrement(ref _leases) == 0)
            Classifier.Dispose();
    }
}

/// <summary>One request's hold on a <see cref="LoadedModel"/>.</summary>
public readonly struct ModelLease(LoadedModel model) : IDisposable
{
    public LoadedModel Model { get; } = model;
    public MnistClassifier Classifier => Model.Classifier;

    public void Dispose() => Model.ReleaseLease();
}
