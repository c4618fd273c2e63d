using System.Diagnostics;
using System.Text.RegularExpressions;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Interactions;
using OpenQA.Selenium.Support.UI;
using Xunit;

namespace MnistNative.Tests.Serving;

/// <summary>
/// The drawing page in a real browser: Debian's headless Chromium, driven through chromium-driver (Selenium),
/// opens the page served by the real `mnistnative serve` process on a loopback port, draws with pointer events and
/// reads the digit the page shows. Screenshots go to artifacts/. Under CI=true a missing browser fails the test.
/// </summary>
public sealed partial class BrowserTests
{
    private const string Chromium = "/usr/bin/chromium";
    private const string ChromeDriver = "/usr/bin/chromedriver";

    [SkippableFact]
    public void DrawingALineShowsOneAndALoopShowsZero()
    {
        bool present = File.Exists(Chromium) && File.Exists(ChromeDriver);
        if (!present && Environment.GetEnvironmentVariable("CI") == "true")
            Assert.Fail(
                $"{Chromium} or {ChromeDriver} is missing; build.sh installs Debian's chromium and chromium-driver"
            );
        Skip.IfNot(
            present,
            $"{Chromium} or {ChromeDriver} is missing: apt-get install chromium chromium-driver (build.sh does)"
        );

        using var server = ServeProcess.Start(ServeHost.SeedModel);
        var options = new ChromeOptions { BinaryLocation = Chromium };
        options.AddArguments(
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1000,640"
        );
        using ChromeDriverService service = ChromeDriverService.CreateDefaultService(
            Path.GetDirectoryName(ChromeDriver)!,
            Path.GetFileName(ChromeDriver)
        );
        service.SuppressInitialDiagnosticInformation = true;
        service.HideCommandPromptWindow = true;
        using var driver = new ChromeDriver(service, options, TimeSpan.FromSeconds(30));
        driver.Navigate().GoToUrl(server.Address + "/");
        IWebElement pad = driver.FindElement(By.Id("pad"));
        string artifacts = Path.Combine(TestPaths.RepoRoot, "artifacts");
        Directory.CreateDirectory(artifacts);

        // a vertical stroke down the middle: a 1
        Draw(driver, pad, Enumerable.Range(0, 9).Select(i => (0, -95 + 24 * i)));
        Assert.Equal("1", ShownDigit(driver));
        driver.GetScreenshot().SaveAsFile(Path.Combine(artifacts, "serve-page-1.png"));

        // cleared, then a closed loop: a 0
        driver.FindElement(By.Id("clear")).Click();
        Assert.Equal("-", driver.FindElement(By.Id("digit")).Text);
        Draw(
            driver,
            pad,
            Enumerable
                .Range(0, 33)
                .Select(i =>
                {
                    double angle = 2 * Math.PI * i / 32;
                    return ((int)Math.Round(62 * Math.Sin(angle)), (int)Math.Round(-92 * Math.Cos(angle)));
                })
        );
        Assert.Equal("0", ShownDigit(driver));
        driver.GetScreenshot().SaveAsFile(Path.Combine(artifacts, "serve-page.png"));

        // the 28x28 preview holds the drawing: some lit pixels, not all
        long lit = Convert.ToInt64(
            ((IJavaScriptExecutor)driver).ExecuteScript(
                "const d = document.getElementById('input').getContext('2d').getImageData(0, 0, 28, 28).data;"
                    + "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
            )
        );
        Assert.InRange(lit, 40, 400);
    }

    /// <summary>One stroke through the points (offsets from the pad's centre), as pointer down, moves, up.</summary>
    private static void Draw(IWebDriver driver, IWebElement pad, IEnumerable<(int X, int Y)> points)
    {
        var pen = new Actions(driver);
        bool first = true;
        (int X, int Y) last = default;
        foreach (var p in points)
        {
            if (first)
                pen.MoveToElement(pad, p.X, p.Y).ClickAndHold();
            else
                pen.MoveByOffset(p.X - last.X, p.Y - last.Y);
            first = false;
            last = p;
        }
        pen.Release().Perform();
    }

    /// <summary>The digit on the page once its answers have stopped changing (the last drawing's answer).</summary>
    private static string ShownDigit(IWebDriver driver)
    {
        var wait = new WebDriverWait(driver, TimeSpan.FromSeconds(10))
        {
            PollingInterval = TimeSpan.FromMilliseconds(150),
        };
        string previous = "";
        wait.Until(d =>
        {
            string count = d.FindElement(By.TagName("body")).GetDomAttribute("data-predictions") ?? "";
            bool settled = count != "" && count == previous;
            previous = count;
            return settled;
        });
        return driver.FindElement(By.Id("digit")).Text;
    }

    /// <summary>`mnistnative serve` as a child process (the built CLI dll), on a free loopback port.</summary>
    internal sealed partial class ServeProcess : IDisposable
    {
        private readonly Process _process;
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _log;
        public string Address { get; }
        public int Id => _process.Id;
        public int ExitCode => _process.ExitCode;
        public string Log => string.Join('\n', _log);

        public async Task<bool> WaitForExitAsync(TimeSpan timeout)
        {
            using var cancel = new CancellationTokenSource(timeout);
            try
            {
                await _process.WaitForExitAsync(cancel.Token);
                return true;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        private ServeProcess(Process process, string address, System.Collections.Concurrent.ConcurrentQueue<string> log)
        {
            _process = process;
            _log = log;
            Address = address;
        }

        /// <summary>The CLI built in the configuration of these tests (src/MnistNative.Cli/bin/CONFIG/TFM).</summary>
        public static string CliDll
        {
            get
            {
                var tfm = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
                string cli = Path.Combine(
                    TestPaths.RepoRoot, "src", "MnistNative.Cli", "bin", tfm.Parent!.Name, tfm.Name, "mnistnative.dll");
                Assert.True(File.Exists(cli), $"{cli} is not built");
                return cli;
            }
        }

        public static ServeProcess Start(string model, params string[] flags)
        {
            string cli = CliDll;
            var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
            string[] args = [cli, "serve", "--model", model, "--urls", "http://127.0.0.1:0", .. flags];
            foreach (string arg in args) start.ArgumentList.Add(arg);
            var process = Process.Start(start)!;
            var address = new TaskCompletionSource<string>();
            var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data != null)
                    log.Enqueue(e.Data);
                if (e.Data != null && Listening().Match(e.Data) is { Success: true } m)
                    address.TrySetResult(m.Groups[1].Value);
            };
            process.OutputDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
            if (!address.Task.Wait(TimeSpan.FromSeconds(20)))
            {
                process.Kill();
                Assert.Fail("mnistnative serve did not say where it listens within 20 s");
            }
            return new ServeProcess(process, address.Task.Result, log);
        }

        [GeneratedRegex(@"mnistnative serve: listening on (http://127\.0\.0\.1:\d+)")]
        private static partial Regex Listening();

        public void Dispose()
        {
            if (!_process.HasExited)
                _process.Kill();
            _process.WaitForExit(5000);
            _process.Dispose();
        }
    }
}
