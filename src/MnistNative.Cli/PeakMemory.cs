using System.Diagnostics;

namespace MnistNative.Cli;

/// <summary>
/// The process's peak resident set size (what `/usr/bin/time -f %M` reports), and on Linux a way to restart it,
/// so `bench` can give each backend's run its own peak in one process.
/// </summary>
public static class PeakMemory
{
    /// <summary>Restarts the peak at the current resident size (Linux: writing 5 to /proc/self/clear_refs); false where it cannot.</summary>
    public static bool TryReset()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Peak resident set size since the start or the last <see cref="TryReset"/>, in MiB.</summary>
    public static double PeakMegabytes()
    {
        using var self = Process.GetCurrentProcess();
        return self.PeakWorkingSet64 / (1024.0 * 1024.0);
    }
}
