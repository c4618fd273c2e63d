namespace MnistNative.Backends.OpenCL;

/// <summary>
/// The kernel sources: embedded in the assembly (LogicalName "MnistNative.OpenCL.&lt;file&gt;.cl"), or read from a
/// directory for kernel development (the CLI's --kernels DIR), so a kernel can be edited without a rebuild.
/// </summary>
internal static class KernelSource
{
    public const string ResourcePrefix = "MnistNative.OpenCL.";

    /// <summary>The files concatenated into one program; #line keeps build-log positions per file.</summary>
    public static string Program(IEnumerable<string> files, string? directory) =>
        string.Concat(files.Select(f => $"#line 1 \"{f}\"\n{Load(f, directory)}\n"));

    public static string Load(string file, string? directory)
    {
        if (directory != null)
        {
            string path = Path.Combine(directory, file);
            if (!File.Exists(path))
                throw new FileNotFoundException(
                    $"kernel file {file} is not in the kernels directory {Path.GetFullPath(directory)}", path);
            return File.ReadAllText(path);
        }
        using Stream stream = typeof(KernelSource).Assembly.GetManifestResourceStream(ResourcePrefix + file)
            ?? throw new InvalidOperationException(
                $"the embedded kernel {file} is missing from {typeof(KernelSource).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
