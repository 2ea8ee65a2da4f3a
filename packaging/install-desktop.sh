#!/bin/sh
# Add iqk-studio to the desktop menu of the current user: the .desktop entry (Exec pointing at the
# program given, default: the iqk-studio next to this script or on PATH), the icon and the GGUF
# file type. Undo with: install-desktop.sh --remove
set -eu
here=$(cd "$(dirname "$0")" && pwd)
apps=${XDG_DATA_HOME:-$HOME/.local/share}/applications
icons=${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps
mime=${XDG_DATA_HOME:-$HOME/.local/share}/mime
if [ "${1:-}" = "--remove" ]; then
    rm -f "$apps/iqk-studio.desktop" "$icons/iqk-studio.png" "$mime/packages/iqk-studio-mime.xml"
    command -v update-mime-database >/dev/null && update-mime-database "$mime" || true
    echo "removed"; exit 0
fi
exe=${1:-}
if [ -z "$exe" ]; then
    if [ -x "$here/iqk-studio" ]; then exe="$here/iqk-studio"; else exe=$(command -v iqk-studio || true); fi
fi
[ -n "$exe" ] && [ -x "$exe" ] || { echo "install-desktop.sh: give the iqk-studio program's path" >&2; exit 1; }
icon="$here/iqk-studio.png"
[ -f "$icon" ] || icon="$here/../resources/icons/iqk-studio.png"
mkdir -p "$apps" "$icons" "$mime/packages"
sed "s|^Exec=iqk-studio|Exec=\"$exe\"|" "$here/iqk-studio.desktop" > "$apps/iqk-studio.desktop"
cp "$icon" "$icons/iqk-studio.png"
cp "$here/iqk-studio-mime.xml" "$mime/packages/iqk-studio-mime.xml"
command -v update-mime-database >/dev/null && update-mime-database "$mime" || true
command -v update-desktop-database >/dev/null && update-desktop-database "$apps" || true
echo "installed $apps/iqk-studio.desktop (Exec $exe)"
