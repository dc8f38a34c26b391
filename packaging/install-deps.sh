#!/usr/bin/env bash
# Installs the Debian packages of packaging/deps.txt that are missing, for the
# tiers named on the command line (run, demo, test; none means all), and says
# which. Needs root to install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list="${*:-run demo test}"
tiers=" $list "
for t in $tiers; do
	case $t in run | demo | test) ;; *) echo "install-deps: unknown tier $t (run, demo, test)" >&2; exit 2 ;; esac
done
missing=()
while read -r pkg tier _; do
	[[ -z "$pkg" || "$pkg" == \#* ]] && continue
	[[ $tiers == *" $tier "* ]] || continue
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$pkg")
	fi
done <"$here/deps.txt"
if ((${#missing[@]})); then
	echo "install-deps: installing missing Debian packages ($list): ${missing[*]}"
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: not root; run: sudo apt-get install ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q "${missing[@]}" >/dev/null
else
	echo "install-deps: all Debian packages present ($list)"
fi
