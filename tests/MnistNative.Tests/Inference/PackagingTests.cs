using MnistNative.Inference;
using Xunit;
using Xunit.Abstractions;

namespace MnistNative.Tests.Inference;

/// <summary>
/// Packs MnistNative.Kernels, MnistNative.Formats and MnistNative.Inference into a temp folder feed under a unique
/// version, restores a throwaway console app from that feed plus nuget.org (with its own package cache, so a stale
/// copy in ~/.nuget can never be picked), and checks its prediction for one test image.
/// </summary>
public sealed class PackagingTests(ITestOutputHelper output)
{
    [SkippableFact]
    [Trait("Category", "Packaging")]
    public void ConsoleAppConsumingThePackagePredictsLikeTheLibrary()
    {
        var (images, _) = InferenceFixtures.TestSet;
        string root = Directory.CreateTempSubdirectory("mnistnative-pack-").FullName;
        try
        {
            string feed = Path.Combine(root, "feed"), app = Path.Combine(root, "app"),
                cache = Path.Combine(root, "packages");
            Directory.CreateDirectory(app);
            string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}";
            foreach (string project in new[] { "MnistNative.Kernels", "MnistNative.Formats", "MnistNative.Inference" })
            {
                string csproj = Path.Combine(TestPaths.RepoRoot, "src", project, project + ".csproj");
                Check(Shell.Run("dotnet",
                    ["pack", csproj, "-c", "Release", "-o", feed, $"-p:Version={version}", "-nologo"],
                    TimeSpan.FromMinutes(4)));
            }
            Assert.True(File.Exists(Path.Combine(feed, $"MnistNative.Inference.{version}.nupkg")),
                "no MnistNative.Inference package in the feed");

            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "app.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="MnistNative.Inference" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using MnistNative.Inference;
                using var model = MnistClassifier.Load(args[0]);
                byte[] image = File.ReadAllBytes(args[1]);
                Console.WriteLine($"label={model.Predict(image)}");
                """);
            // Fence the app off from any Directory.*.props above the temp folder.
            File.WriteAllText(Path.Combine(root, "Directory.Build.props"), "<Project />");
            File.WriteAllText(Path.Combine(root, "Directory.Packages.props"), "<Project />");
            string image = Path.Combine(root, "image.bin");
            const int index = 7;
            File.WriteAllBytes(image, images.AsSpan(index * 784, 784).ToArray());

            var env = new Dictionary<string, string>
            {
                ["NUGET_PACKAGES"] = cache, ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1"
            };
            Check(Shell.Run("dotnet", ["restore", "-nologo"], TimeSpan.FromMinutes(4), app, env));
            var (code, log) = Shell.Run("dotnet",
                ["run", "--no-restore", "-c", "Release", "--", InferenceFixtures.FinalModel, image],
                TimeSpan.FromMinutes(4), app, env);
            output.WriteLine(log);
            Assert.True(code == 0, log);

            using var c = MnistClassifier.Load(InferenceFixtures.FinalModel);
            Assert.Contains($"label={c.Predict(images.AsSpan(index * 784, 784))}", log);
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }

    private void Check((int Code, string Log) result)
    {
        output.WriteLine(result.Log);
        Assert.True(result.Code == 0, result.Log);
    }
}
