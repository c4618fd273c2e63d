using System.Reflection;
using Microsoft.AspNetCore.Http;

namespace MnistNative.Serving;

/// <summary>The drawing page's files, embedded in this assembly (Page/*) and served from memory.</summary>
internal static class StaticPage
{
    public static readonly IReadOnlyList<(string Route, string ContentType, byte[] Bytes)> Files =
    [
        ("/", "text/html; charset=utf-8", Load("index.html")),
        ("/app.js", "text/javascript; charset=utf-8", Load("app.js")),
        ("/style.css", "text/css; charset=utf-8", Load("style.css")),
    ];

    private static byte[] Load(string name)
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Page/" + name)
            ?? throw new InvalidOperationException(
                $"the page file {name} is not embedded in {typeof(StaticPage).Assembly.GetName().Name}"
            );
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    public static IResult Serve(string contentType, byte[] bytes) => Results.Bytes(bytes, contentType);
}
