using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace MnistNative.Tests;

/// <summary>
/// A minimal HTTPS/1.1 server on 127.0.0.1 with a self-signed certificate, for download tests. Each
/// request gets one response and the connection is closed. A route can serve bytes, a status code, or
/// announce more bytes than it sends and drop the connection.
/// </summary>
public sealed class LoopbackHttpsServer : IDisposable
{
    /// <summary>
    /// What to answer; with <paramref name="DripEvery"/>, the body goes out 16 bytes at a time, that far apart.
    /// </summary>
    public sealed record Route(byte[] Body, int Status = 200, bool DropHalfway = false, TimeSpan? DripEvery = null);

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    // One certificate for every server in the process, so one trusting handler can reach several mirrors.
    private static readonly X509Certificate2 Certificate = CreateCertificate();
    private readonly Func<string, Route?> _routes;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _requests;

    public LoopbackHttpsServer(Func<string, Route?> routes)
    {
        _routes = routes;
        _listener.Start();
        _loop = Task.Run(AcceptLoop);
    }

    public string BaseUrl => $"https://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/";
    public int Requests => _requests;

    /// <summary>A client handler that trusts exactly this server's certificate.</summary>
    public HttpMessageHandler TrustingHandler() => new SocketsHttpHandler
    {
        // generous: on a loaded CI machine the TLS handshake alone has taken over 5 s (a flaky "timed out")
        ConnectTimeout = TimeSpan.FromSeconds(30),
        SslOptions = new SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
                cert is not null && cert.GetCertHashString() == Certificate.GetCertHashString(),
        },
    };

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(() => Serve(client));
        }
    }

    private async Task Serve(TcpClient client)
    {
        using (client)
        {
            try
            {
                using var ssl = new SslStream(client.GetStream());
                await ssl.AuthenticateAsServerAsync(Certificate);
                var request = new StringBuilder();
                var buffer = new byte[1];
                while (!request.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
                {
                    if (await ssl.ReadAsync(buffer) == 0) return;
                    request.Append((char)buffer[0]);
                }
                Interlocked.Increment(ref _requests);
                string path = request.ToString().Split(' ')[1].TrimStart('/');
                Route route = _routes(path) ?? new Route("not found"u8.ToArray(), 404);
                string reason = route.Status == 200 ? "OK" : "Not Found";
                string head = $"HTTP/1.1 {route.Status} {reason}\r\n" +
                    $"Content-Length: {route.Body.Length}\r\nConnection: close\r\n\r\n";
                await ssl.WriteAsync(Encoding.ASCII.GetBytes(head));
                int send = route.DropHalfway ? route.Body.Length / 2 : route.Body.Length;
                if (route.DripEvery is TimeSpan drip)
                    for (int sent = 0; sent < send && !_stop.IsCancellationRequested; sent += 16)
                    {
                        await ssl.WriteAsync(route.Body.AsMemory(sent, Math.Min(16, send - sent)));
                        await ssl.FlushAsync();
                        await Task.Delay(drip, _stop.Token);
                    }
                else await ssl.WriteAsync(route.Body.AsMemory(0, send));
                await ssl.FlushAsync();
                // reset, not a clean close
                if (route.DropHalfway) client.Client.LingerState = new LingerOption(true, 0);
            }
            catch (Exception) { /* the client went away; nothing to do */ }
        }
    }

    private static X509Certificate2 CreateCertificate()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
    }
}
