#!/usr/bin/env bash
# Bootstraps a fresh machine, then runs build.cake: ./build.sh --target=Train | Test | Data | Build | ...
# It installs what is missing (as root, with apt-get): the OpenCL runtime (PoCL's CPU device) and npm, which
# the data fetcher uses; headless Chromium and its WebDriver, which the serve page's browser test drives; AFL++
# for --target=Fuzz; then the local dotnet tools (Cake, SharpFuzz) from .config/dotnet-tools.json.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
# grep without -q reads all of ldconfig's output: -q exits at the first match and, under pipefail, ldconfig's
# SIGPIPE would make the test fail and reinstall the package on every run
if ! ldconfig -p 2>/dev/null | grep 'libOpenCL\.so\.1' >/dev/null; then need_apt+=(ocl-icd-libopencl1); fi
if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then need_apt+=(pocl-opencl-icd); fi
if ! command -v npm >/dev/null 2>&1; then need_apt+=(npm); fi
if ! command -v cc >/dev/null 2>&1; then need_apt+=(gcc libc6-dev); fi
if [ ! -x /usr/bin/chromium ]; then need_apt+=(chromium); fi
if [ ! -x /usr/bin/chromedriver ]; then need_apt+=(chromium-driver); fi
# AFL++ only for the fuzzing target (./build.sh --target=Fuzz).
case " $* " in *" --target=Fuzz "*|*" --target Fuzz "*) command -v afl-fuzz >/dev/null 2>&1 || need_apt+=(afl++) ;; esac
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "build.sh: installing ${need_apt[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "build.sh: missing ${need_apt[*]}; install them (Debian: sudo apt-get install ${need_apt[*]}) - OpenCL backends, data fetching and the serve page's browser test need them" >&2
  fi
fi

if ! command -v dotnet >/dev/null 2>&1; then
  echo "build.sh: the .NET 10 SDK is required (https://dot.net); dotnet was not found on PATH" >&2
  exit 1
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet tool restore >/dev/null
exec dotnet cake build.cake "$@"
