namespace MnistNative.Serving;

/// <summary>What `mnistnative serve` is asked to do.</summary>
public sealed record ServeOptions
{
    public const string DefaultUrls = "http://127.0.0.1:5080";
    public const int DefaultMaxBatch = 1000;

    /// <summary>The model .npz; it is watched, and replacing it swaps the model in without dropping requests.</summary>
    public required string ModelPath { get; init; }

    /// <summary>Kestrel's listen addresses, separated by ';' (port 0 picks a free port).</summary>
    public string Urls { get; init; } = DefaultUrls;

    /// <summary>The most images one batch request may hold.</summary>
    public int MaxBatch { get; init; } = DefaultMaxBatch;

    /// <summary>How long the model file must stay quiet after a change before it is loaded.</summary>
    public TimeSpan ReloadDebounce { get; init; } = TimeSpan.FromMilliseconds(300);

    /// <summary>
    /// The largest JSON body: 784 numbers written as "0.003921569," take 12 bytes each, so 16 KiB per image holds
    /// any reasonable spelling, plus 64 KiB of room for whitespace and a small request.
    /// </summary>
    public long MaxJsonBytes => 64 * 1024 + 16L * 1024 * MaxBatch;
}
