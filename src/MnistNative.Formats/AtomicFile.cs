namespace MnistNative.Formats;

/// <summary>Writes a file through a temp file in the same directory, then renames it into place, so a
/// crash or an error never leaves a half-written file under the final name.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        if (!Directory.Exists(dir)) throw new DataFormatException(path, $"directory {dir} does not exist");
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new DataFormatException(path, "permission denied");
        }
        catch (IOException e)
        {
            TryDelete(temp);
            throw new DataFormatException(path, $"cannot be written ({e.Message})");
        }
        catch { TryDelete(temp); throw; }
    }

    public static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
