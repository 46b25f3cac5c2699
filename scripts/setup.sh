#!/usr/bin/env bash
# One idempotent setup for kimi-agent on Debian (run as root, or with sudo available):
#   1. system packages: Chromium, Xvfb, xdotool, xclip, openbox, socat, bubblewrap, slirp4netns (each sandboxed
#      worker's own network under --allow-network), fonts, ffmpeg (recordings), tkinter,
#      user-mode-linux (the tests boot it as a kernel whose only cgroup hierarchy is v2)
#   2. a virtual environment at .venv (or $KIMI_AGENT_VENV) with kimi-agent installed editable + [dev]
#   3. with --osworld: the OSWorld bridge environment .venv-osworld (desktop-env and what its
#      evaluators import; `kimi-agent osworld setup`)
# Safe to run again: it only installs what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${KIMI_AGENT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
WITH_OSWORLD=0
for arg in "$@"; do
  case "$arg" in
    --osworld) WITH_OSWORLD=1 ;;
    *) echo "usage: $0 [--osworld]" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

APT_PKGS=(chromium xvfb xauth xdotool x11-utils xclip wmctrl openbox socat sqlite3 jq bubblewrap slirp4netns iproute2
          fonts-dejavu-core fonts-liberation ffmpeg user-mode-linux)
"$PY" -c 'import tkinter' 2>/dev/null || APT_PKGS+=(python3-tk)   # pyautogui exits without tkinter

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "system packages already present"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
say "installing kimi-agent (editable, with dev extras) into $VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e "$ROOT[dev]"
# pyautogui pulls the 2015 python3-xlib, which overwrites Xlib/ and fails with XauthError;
# python-xlib 0.33 must be the one installed last.
"$VENV/bin/pip" install -q --no-deps --force-reinstall "python-xlib==0.33"
if [ "$WITH_OSWORLD" = 1 ]; then
  say "creating the OSWorld bridge environment $ROOT/.venv-osworld"
  (cd "$ROOT" && "$VENV/bin/kimi-agent" osworld setup --venv "$ROOT/.venv-osworld")
fi
say "done. Chromium: $(command -v chromium || echo missing). Do not run 'playwright install': we use /usr/bin/chromium."
