namespace MnistNative.Native;
internal static class Exports { }
