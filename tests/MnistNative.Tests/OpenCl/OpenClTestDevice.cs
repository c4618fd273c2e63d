using MnistNative.Backends.OpenCL;
using Xunit;

namespace MnistNative.Tests.OpenCl;

/// <summary>
/// Whether the OpenCL tests can run here. Under CI=true a missing OpenCL platform is a failure; elsewhere
/// the tests skip and say what to install.
/// </summary>
internal static class OpenClTestDevice
{
    /// <summary>
    /// Every OpenCL test class joins this collection, so they run one at a time: the live-object count is
    /// process-wide, and PoCL already uses every core.
    /// </summary>
    public const string Collection = "OpenCL";

    public static void RequireOpenCl()
    {
        if (OpenClRuntime.TryProbe(out string reason)) return;
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.Fail($"CI=true and OpenCL is unavailable: {reason}");
        Skip.If(true, $"OpenCL is unavailable ({reason}); " +
                      "to run these tests: apt-get install ocl-icd-libopencl1 pocl-opencl-icd");
    }

    /// <summary>The device the tests use: MNISTNATIVE_OPENCL_DEVICE if set, else the default choice.</summary>
    public static string? Device =>
        Environment.GetEnvironmentVariable("MNISTNATIVE_OPENCL_DEVICE") is { Length: > 0 } d ? d : null;
}
