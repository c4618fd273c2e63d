namespace MnistNative.Cli;

public static class Program
{
    public static int Main(string[] args) => new CliApp(Console.Out, Console.Error).Run(args);
}
