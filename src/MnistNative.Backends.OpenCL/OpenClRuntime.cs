using System.Text;
using MnistNative.Core;
using Silk.NET.OpenCL;

namespace MnistNative.Backends.OpenCL;

public enum OpenClDeviceType
{
    Cpu,
    Gpu,
    Accelerator,
    Other,
}

/// <summary>One OpenCL device, as `mnistnative devices` prints it. <see cref="Id"/> is the "P:D" index for --device.
/// </summary>
public sealed record OpenClDeviceInfo(
    int PlatformIndex,
    int DeviceIndex,
    string PlatformName,
    string PlatformVersion,
    string Name,
    string Vendor,
    OpenClDeviceType Type,
    int ComputeUnits,
    long GlobalMemoryBytes,
    long LocalMemoryBytes,
    long MaxAllocationBytes,
    long MaxWorkGroupSize,
    string OpenClCVersion,
    bool SupportsDouble,
    int PreferredFloatVectorWidth)
{
    public string Id => $"{PlatformIndex}:{DeviceIndex}";

    internal nint PlatformHandle { get; init; }
    internal nint DeviceHandle { get; init; }

    public override string ToString() =>
        $"{Id} {Name} ({Vendor}, {Type}, {ComputeUnits} compute units, {GlobalMemoryBytes >> 20} MiB global, " +
        $"{LocalMemoryBytes >> 10} KiB local, work-group <= {MaxWorkGroupSize}, {OpenClCVersion}, " +
        $"double {(SupportsDouble ? "yes" : "no")}) on {PlatformName}";
}

/// <summary>
/// The OpenCL loader, platforms and devices. Nothing here crashes when OpenCL is missing: <see cref="TryProbe"/>
/// says why in one line, and everything else throws <see cref="BackendUnavailableException"/> with that reason.
/// </summary>
public static unsafe class OpenClRuntime
{
    public const string InstallHint = "apt-get install ocl-icd-libopencl1 pocl-opencl-icd";

    private static readonly Lazy<(CL? Api, string? Error)> s_api = new(() => Load(null));

    /// <summary>Live OpenCL objects (contexts, queues, programs, kernels, buffers) owned by this process's backends.
    /// </summary>
    public static int LiveObjectCount => ClHandle.Live;

    internal static CL Api => s_api.Value.Api ?? throw new BackendUnavailableException(s_api.Value.Error!);

    /// <summary>
    /// True when an OpenCL loader and at least one platform with a device exist. Otherwise false with a reason
    /// such as "no OpenCL loader (libOpenCL.so.1 not found): apt-get install ...". Never throws.
    /// </summary>
    public static bool TryProbe(out string reason) => TryProbe(out reason, out _);

    /// <summary><see cref="TryProbe(out string)"/>, also returning every device found.</summary>
    public static bool TryProbe(out string reason, out IReadOnlyList<OpenClDeviceInfo> devices)
    {
        devices = [];
        try
        {
            var (api, error) = s_api.Value;
            return Probe(api, error, out reason, out devices);
        }
        catch (Exception e)
        {
            reason = $"OpenCL probe failed: {e.Message}";
            return false;
        }
    }

    /// <summary>
    /// The first OpenCL GPU, or null with why there is none. On Linux a GPU driver needs a device node (/dev/dri,
    /// /dev/nvidia*, /dev/kfd, /dev/mali*, /dev/accel); without one the OpenCL loader is not opened at all, because
    /// opening it loads every installed driver, PoCL's CPU driver with LLVM among them (about 60 MB resident for a
    /// question whose answer is already known).
    /// </summary>
    public static OpenClDeviceInfo? FindGpu(out string whyNone)
    {
        if (OperatingSystem.IsLinux() && !GpuDeviceNodeExists())
        {
            whyNone = "no GPU device node in /dev (dri, nvidia*, kfd, mali*, accel), so OpenCL was not probed";
            return null;
        }
        if (!TryProbe(out string reason, out var devices))
        {
            whyNone = reason;
            return null;
        }
        whyNone = "only " + string.Join(", ", devices.Select(d => $"{d.Name} ({d.Type})"));
        return devices.FirstOrDefault(d => d.Type == OpenClDeviceType.Gpu);
    }

    private static bool GpuDeviceNodeExists()
    {
        try
        {
            return Directory.Exists("/dev/dri") || Directory.Exists("/dev/accel") || File.Exists("/dev/kfd")
                || Directory.EnumerateFileSystemEntries("/dev", "nvidia*").Any()
                || Directory.EnumerateFileSystemEntries("/dev", "mali*").Any();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return true; // cannot tell: ask OpenCL
        }
    }

    /// <summary>Probes a loader by library name; for tests that prove a missing loader is a reason, not a crash.
    /// </summary>
    internal static bool TryProbeLibrary(string libraryName, out string reason)
    {
        try
        {
            var (api, error) = Load(libraryName);
            return Probe(api, error, out reason, out _);
        }
        catch (Exception e)
        {
            reason = $"OpenCL probe failed: {e.Message}";
            return false;
        }
    }

    private static bool Probe(CL? api, string? error, out string reason, out IReadOnlyList<OpenClDeviceInfo> devices)
    {
        devices = [];
        if (api == null)
        {
            reason = error!;
            return false;
        }
        devices = Enumerate(api);
        if (devices.Count == 0)
        {
            reason = $"no OpenCL platform with a device is installed ({InstallHint})";
            return false;
        }
        reason = $"{devices.Count} OpenCL device(s): " +
            string.Join("; ", devices.Select(d => $"{d.Id} {d.Name} ({d.Type})"));
        return true;
    }

    /// <summary>Every device of every platform, in platform then device order.</summary>
    public static IReadOnlyList<OpenClDeviceInfo> ListDevices() => Enumerate(Api);

    /// <summary>
    /// Picks a device: null, "" or "auto" = the first GPU, else the first device; "P:D" = that index;
    /// anything else = the first device whose name, vendor or platform contains it (case-insensitive).
    /// A selector that matches nothing throws, listing what exists.
    /// </summary>
    public static OpenClDeviceInfo SelectDevice(string? selector)
    {
        OpenClDeviceInfo device = Select(selector);
        LastSelectedDevice = device;
        return device;
    }

    /// <summary>
    /// The device most recently picked by <see cref="SelectDevice"/> in this process (null: none yet): the CLI
    /// names it when an <see cref="OpenClException"/> reaches it, which carries the call and code but no device.
    /// </summary>
    public static OpenClDeviceInfo? LastSelectedDevice { get; private set; }

    private static OpenClDeviceInfo Select(string? selector)
    {
        IReadOnlyList<OpenClDeviceInfo> devices = ListDevices();
        if (devices.Count == 0)
            throw new BackendUnavailableException($"no OpenCL platform with a device is installed ({InstallHint})");
        if (string.IsNullOrWhiteSpace(selector) || selector == "auto")
            return devices.FirstOrDefault(d => d.Type == OpenClDeviceType.Gpu) ?? devices[0];
        string listing = "available OpenCL devices:\n  " + string.Join("\n  ", devices);
        string[] parts = selector.Split(':');
        if (parts.Length == 2 && int.TryParse(parts[0], out int p) && int.TryParse(parts[1], out int d))
            return devices.FirstOrDefault(x => x.PlatformIndex == p && x.DeviceIndex == d)
                ?? throw new BackendUnavailableException($"there is no OpenCL device {selector}; {listing}");
        return devices.FirstOrDefault(x => x.Name.Contains(selector, StringComparison.OrdinalIgnoreCase)
                                           || x.Vendor.Contains(selector, StringComparison.OrdinalIgnoreCase)
                                           || x.PlatformName.Contains(selector, StringComparison.OrdinalIgnoreCase))
            ?? throw new BackendUnavailableException(
                $"no OpenCL device matches '{selector}' (use P:D or part of a name); {listing}");
    }

    private static (CL? Api, string? Error) Load(string? libraryName)
    {
        try
        {
            CL api = libraryName == null ? CL.GetApi() : new CL(CL.CreateDefaultContext([libraryName]));
            // Resolving one entry point proves the library really loaded (Silk.NET resolves lazily).
            uint count;
            api.GetPlatformIDs(0, null, &count);
            return (api, null);
        }
        catch (Exception e) when (e is DllNotFoundException or FileNotFoundException or EntryPointNotFoundException
                                       or PlatformNotSupportedException or TypeInitializationException
                                       or InvalidOperationException)
        {
            return (null, $"no OpenCL loader (libOpenCL.so.1 not found: {e.GetType().Name}): {InstallHint}");
        }
    }

    private static List<OpenClDeviceInfo> Enumerate(CL api)
    {
        var result = new List<OpenClDeviceInfo>();
        uint platformCount;
        int code = api.GetPlatformIDs(0, null, &platformCount);
        // CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no platform
        if (code == -1001 || platformCount == 0) return result;
        ClErrors.Check(code, "clGetPlatformIDs");
        var platforms = new nint[platformCount];
        fixed (nint* pp = platforms) ClErrors.Check(api.GetPlatformIDs(platformCount, pp, null), "clGetPlatformIDs");
        for (int p = 0; p < platforms.Length; p++)
        {
            uint deviceCount;
            code = api.GetDeviceIDs(platforms[p], DeviceType.All, 0, null, &deviceCount);
            if (code == -1 || deviceCount == 0) continue; // CL_DEVICE_NOT_FOUND
            ClErrors.Check(code, "clGetDeviceIDs");
            var devices = new nint[deviceCount];
            fixed (nint* dp = devices)
                ClErrors.Check(api.GetDeviceIDs(platforms[p], DeviceType.All, deviceCount, dp, null), "clGetDeviceIDs");
            string platformName = PlatformString(api, platforms[p], PlatformInfo.Name);
            string platformVersion = PlatformString(api, platforms[p], PlatformInfo.Version);
            for (int d = 0; d < devices.Length; d++)
            {
                nint dev = devices[d];
                ulong type = DeviceValue<ulong>(api, dev, DeviceInfo.Type);
                OpenClDeviceType kind = (type & (ulong)DeviceType.Gpu) != 0 ? OpenClDeviceType.Gpu
                    : (type & (ulong)DeviceType.Cpu) != 0 ? OpenClDeviceType.Cpu
                    : (type & (ulong)DeviceType.Accelerator) != 0 ? OpenClDeviceType.Accelerator
                    : OpenClDeviceType.Other;
                string extensions = DeviceString(api, dev, DeviceInfo.Extensions);
                bool fp64 = extensions.Contains("cl_khr_fp64")
                            || DeviceValue<ulong>(api, dev, DeviceInfo.DoubleFPConfig) != 0;
                result.Add(new OpenClDeviceInfo(
                    p, d, platformName, platformVersion,
                    DeviceString(api, dev, DeviceInfo.Name),
                    DeviceString(api, dev, DeviceInfo.Vendor),
                    kind,
                    (int)DeviceValue<uint>(api, dev, DeviceInfo.MaxComputeUnits),
                    (long)DeviceValue<ulong>(api, dev, DeviceInfo.GlobalMemSize),
                    (long)DeviceValue<ulong>(api, dev, DeviceInfo.LocalMemSize),
                    (long)DeviceValue<ulong>(api, dev, DeviceInfo.MaxMemAllocSize),
                    (long)DeviceValue<nuint>(api, dev, DeviceInfo.MaxWorkGroupSize),
                    // CL_DEVICE_OPENCL_C_VERSION is deprecated in 3.0, but it is what 1.2 devices answer
#pragma warning disable CS0618
                    DeviceString(api, dev, DeviceInfo.OpenclCVersion),
#pragma warning restore CS0618
                    fp64,
                    (int)DeviceValue<uint>(api, dev, DeviceInfo.PreferredVectorWidthFloat))
                { PlatformHandle = platforms[p], DeviceHandle = dev });
            }
        }
        return result;
    }

    private static T DeviceValue<T>(CL api, nint device, DeviceInfo what) where T : unmanaged
    {
        T value = default;
        int code = api.GetDeviceInfo(device, what, (nuint)sizeof(T), &value, null);
        // CL_DEVICE_DOUBLE_FP_CONFIG is CL_INVALID_VALUE on 1.x devices without doubles: treat as "none".
        if (code == -30 && what == DeviceInfo.DoubleFPConfig) return default;
        ClErrors.Check(code, $"clGetDeviceInfo({what})");
        return value;
    }

    private static string DeviceString(CL api, nint device, DeviceInfo what)
    {
        nuint size;
        ClErrors.Check(api.GetDeviceInfo(device, what, 0, null, &size), $"clGetDeviceInfo({what})");
        var buffer = new byte[(int)size];
        fixed (byte* b = buffer)
            ClErrors.Check(api.GetDeviceInfo(device, what, size, b, null), $"clGetDeviceInfo({what})");
        return Encoding.UTF8.GetString(buffer).TrimEnd('\0').Trim();
    }

    private static string PlatformString(CL api, nint platform, PlatformInfo what)
    {
        nuint size;
        ClErrors.Check(api.GetPlatformInfo(platform, what, 0, null, &size), $"clGetPlatformInfo({what})");
        var buffer = new byte[(int)size];
        fixed (byte* b = buffer)
            ClErrors.Check(api.GetPlatformInfo(platform, what, size, b, null), $"clGetPlatformInfo({what})");
        return Encoding.UTF8.GetString(buffer).TrimEnd('\0').Trim();
    }
}
