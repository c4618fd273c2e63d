using System.Diagnostics;

namespace MnistNative.Cli;

/// <summary>The process's peak resident set size, what `/usr/bin/time -f %M` reports (Linux: VmHWM).</summary>
public static class PeakMemory
{
    public static double Megabytes()
    {
        using var self = Process.GetCurrentProcess();
        return self.PeakWorkingSet64 / (1024.0 * 1024.0);
    }
}
