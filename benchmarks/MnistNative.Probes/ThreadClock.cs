internal static class ThreadClock
{
    private struct Timespec { public long Seconds, Nanoseconds; }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out Timespec t);

    /// <summary>CPU time of the calling thread in ms (CLOCK_THREAD_CPUTIME_ID): excludes time descheduled by other
    /// load.</summary>
    public static double CpuMs()
    {
        ClockGetTime(3, out Timespec t);
        return t.Seconds * 1e3 + t.Nanoseconds / 1e6;
    }
}
