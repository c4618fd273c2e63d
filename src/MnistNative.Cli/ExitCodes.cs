namespace MnistNative.Cli;

public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>Something unexpected (a bug): one line on stderr, the stack only with MNISTNATIVE_DEBUG=1.</summary>
    public const int Unexpected = 1;
    /// <summary>Bad flags, bad files, a backend this machine cannot run.</summary>
    public const int BadInput = 2;
    /// <summary>Training diverged (NaN or Inf); no model file was written.</summary>
    public const int Diverged = 3;
    public const int Cancelled = 130;
}
