using System.CommandLine;
using System.CommandLine.Parsing;
using MnistNative.Backends.OpenCL;
using MnistNative.Core;
using MnistNative.Formats;

namespace MnistNative.Cli;

/// <summary>
/// The `mnistnative` command line. The only part of MnistNative that prints: results on stdout, progress
/// and explanations on stderr (so `--json` keeps stdout to exactly one JSON object).
/// </summary>
public sealed partial class CliApp(TextWriter stdout, TextWriter stderr)
{
    public TextWriter Out { get; } = stdout;
    public TextWriter Err { get; } = stderr;

    public int Run(string[] args)
    {
        RootCommand root = BuildRoot();
        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (ParseError error in parse.Errors) Err.WriteLine($"mnistnative: {OneLine(error.Message)}");
            Err.WriteLine("Run 'mnistnative --help' (or 'mnistnative COMMAND --help') for usage.");
            return ExitCodes.BadInput;
        }
        return parse.Invoke(new InvocationConfiguration
        {
            Output = Out, Error = Err, EnableDefaultExceptionHandler = false,
        });
    }

    private RootCommand BuildRoot()
    {
        var root = new RootCommand(
            "MnistNative: trains and serves the seed notebook's MNIST MLP (784-H-10, ReLU, softmax) on a scalar " +
            "reference, hand-vectorized CPU paths and OpenCL. Data is fetched and verified on first use.");
        root.Subcommands.Add(TrainCommand());
        root.Subcommands.Add(EvalCommand());
        root.Subcommands.Add(PredictCommand());
        root.Subcommands.Add(ExportCommand());
        root.Subcommands.Add(DataCommand());
        root.Subcommands.Add(DevicesCommand());
        root.Subcommands.Add(BenchCommand());
        root.Subcommands.Add(BenchMiniBatchCommand());
        root.Subcommands.Add(ServeCommand());
        return root;
    }

    /// <summary>Runs a command body, turning the failures a user can cause into one line and an exit code.</summary>
    private int Guard(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (DataFormatException e) { return Fail(ExitCodes.BadInput, e.Message); }
        catch (BackendUnavailableException e) { return Fail(ExitCodes.BadInput, e.Message); }
        catch (ArgumentException e) { return Fail(ExitCodes.BadInput, e.Message); }
        catch (DivergenceException e) { return Fail(ExitCodes.Diverged, e.Message + "; no model was written"); }
        catch (OpenClException e)
        {
            // a device out of memory or a failed kernel is about the device and the run's sizes, not a bug here
            string device = OpenClRuntime.LastSelectedDevice is { } d ? $"{d.Id} {d.Name}" : "(none selected yet)";
            return Fail(ExitCodes.BadInput, $"OpenCL device {device}: {e.Message}");
        }
        catch (OperationCanceledException) { return Fail(ExitCodes.Cancelled, "cancelled"); }
        catch (Exception e)
        {
            if (Environment.GetEnvironmentVariable("MNISTNATIVE_DEBUG") == "1") Err.WriteLine(e);
            return Fail(ExitCodes.Unexpected,
                $"unexpected {e.GetType().Name}: {e.Message} (set MNISTNATIVE_DEBUG=1 for the stack trace)");
        }
    }

    // One line of printable text: line breaks and tabs become spaces, other control characters (a NUL from a
    // corrupt file's name or key) become '?', so a message never garbles a terminal or a log.
    private static string OneLine(string message)
    {
        string line = string.Join(' ', message.Split(['\n', '\r', '\t'],
            StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return string.Create(line.Length, line, static (span, text) =>
        {
            for (int i = 0; i < text.Length; i++) span[i] = char.IsControl(text[i]) ? '?' : text[i];
        });
    }

    private int Fail(int code, string message)
    {
        Err.WriteLine($"mnistnative: error: {OneLine(message)}");
        return code;
    }

    // ---- option helpers -------------------------------------------------------------------------

    internal static Option<int> IntOption(string name, string description, int defaultValue, int min, int max,
        string? helpName = null)
    {
        var o = new Option<int>(name)
        {
            Description = description, DefaultValueFactory = _ => defaultValue, HelpName = helpName,
        };
        o.Validators.Add(r =>
        {
            if (!TryGetValue(r, out int v)) return;
            if (v < min || v > max) r.AddError($"{name} must be between {min} and {max}, got {v}");
        });
        return o;
    }

    /// <summary>The option's value, or false when it did not parse (the parser reports that error itself).</summary>
    private static bool TryGetValue<T>(OptionResult r, out T value)
    {
        try
        {
            value = r.GetValueOrDefault<T>();
            return true;
        }
        catch (InvalidOperationException)
        {
            value = default!;
            return false;
        }
    }

    internal static Option<double> PositiveDoubleOption(string name, string description, double defaultValue)
    {
        var o = new Option<double>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        o.Validators.Add(r =>
        {
            if (!TryGetValue(r, out double v)) return;
            if (!double.IsFinite(v) || v <= 0) r.AddError($"{name} must be a positive number, got {v}");
        });
        return o;
    }

    internal static Option<string?> DataOption() => new("--data")
    {
        Description = "Directory holding the MNIST files (default: MNIST_DATA_DIR, else data/mnist in the " +
            "checkout). Missing files are fetched into it.",
        HelpName = "DIR",
    };

    internal static Option<bool> JsonOption(string what) => new("--json")
    {
        Description = $"Print {what} as one JSON object on stdout; progress goes to stderr.",
    };

    private static Precision ParsePrecision(string p) => p == "f64" ? Precision.F64 : Precision.F32;
}
