#!/usr/bin/env bash
# Installs the Debian packages listed in packaging/deps.txt that are missing,
# and the Go modules. Prints what it installs. Needs root to install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
while read -r pkg _; do
	[[ -z "$pkg" || "$pkg" == \#* ]] && continue
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$pkg")
	fi
done <"$here/deps.txt"
if ((${#missing[@]})); then
	echo "install-deps: installing missing Debian packages: ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: not root; run: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q "${missing[@]}" >/dev/null
else
	echo "install-deps: all Debian packages present"
fi
