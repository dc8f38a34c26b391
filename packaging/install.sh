#!/usr/bin/env bash
# install.sh DESTDIR PREFIX SYSCONFDIR BIN: what `make install` does.
#
# Installs the binaries from BIN, the systemd units, the D-Bus policy,
# activation file and interface XML, the polkit policy and rules, sysusers.d
# and tmpfiles.d snippets, a commented config (never overwriting an existing
# one), the docs, shell completions and man pages, all below DESTDIR.
# Paths inside the installed files are rewritten for PREFIX. It does not
# create users, directories under /var or the bridge's token: that is the
# package's postinst (packaging/deb.sh) or, for a plain `make install`, the
# commands docs/PACKAGING.md lists.
set -euo pipefail

if (($# != 4)); then
	echo "usage: $0 DESTDIR PREFIX SYSCONFDIR BIN" >&2
	exit 2
fi
destdir=${1%/}
prefix=${2%/}
sysconfdir=${3%/}
bin=$4
src=$(cd "$(dirname "$0")/.." && pwd)
[[ $bin == /* ]] || bin=$src/$bin

for b in hyper2kvmd hyperctl; do
	[[ -x $bin/$b ]] || { echo "install: $bin/$b missing: run make build first" >&2; exit 1; }
done

# fix rewrites the compiled-in /usr paths of the binaries for PREFIX.
fix() { sed -e "s|/usr/bin/hyper2kvmd|$prefix/bin/hyper2kvmd|g" -e "s|/usr/bin/hyperctl|$prefix/bin/hyperctl|g" "$1"; }
put() { # put MODE SRC DEST: install one file, path-fixed when it is text we own
	install -d -m 0755 "$(dirname "$3")"
	fix "$2" >"$3.tmp.$$"
	chmod "$1" "$3.tmp.$$"
	mv -f "$3.tmp.$$" "$3"
}

install -d -m 0755 "$destdir$prefix/bin"
install -m 0755 "$bin/hyper2kvmd" "$bin/hyperctl" "$destdir$prefix/bin/"

shopt -s nullglob
unitdir=$destdir$prefix/lib/systemd/system
for f in "$src"/units/*.service "$src"/units/*.path "$src"/units/*.socket "$src"/units/*.slice; do
	put 0644 "$f" "$unitdir/$(basename "$f")"
done

dbus=$destdir$prefix/share/dbus-1
[[ -f $src/dbusapi/io.hyper2kvm.Agent1.conf ]] && put 0644 "$src/dbusapi/io.hyper2kvm.Agent1.conf" "$dbus/system.d/io.hyper2kvm.Agent1.conf"
[[ -f $src/dbusapi/io.hyper2kvm.Agent1.service ]] && put 0644 "$src/dbusapi/io.hyper2kvm.Agent1.service" "$dbus/system-services/io.hyper2kvm.Agent1.service"
for f in "$src"/dbusapi/*.xml; do
	put 0644 "$f" "$dbus/interfaces/$(basename "$f")"
done

for f in "$src"/polkit/*.policy; do
	put 0644 "$f" "$destdir$prefix/share/polkit-1/actions/$(basename "$f")"
done
for f in "$src"/polkit/*.rules; do
	# polkitd reads rules.d as its own user; 0644 like every package's rules.
	put 0644 "$f" "$destdir$prefix/share/polkit-1/rules.d/$(basename "$f")"
done

put 0644 "$src/packaging/sysusers.conf" "$destdir$prefix/lib/sysusers.d/hyper2kvm.conf"
put 0644 "$src/packaging/tmpfiles.conf" "$destdir$prefix/lib/tmpfiles.d/hyper2kvm.conf"

conf=$destdir$sysconfdir/hyper2kvm/agent.yaml
if [[ -e $conf ]]; then
	echo "install: keeping existing $conf"
else
	put 0644 "$src/packaging/agent.yaml" "$conf"
fi

# Manifest templates (docs/WORKFLOW.md): shipped ones under share/, the
# admin's own (and hook scripts) under /etc, which the package leaves empty.
for f in "$src"/packaging/templates/*.yaml; do
	put 0644 "$f" "$destdir$prefix/share/hyper2kvm/templates/$(basename "$f")"
done
install -d -m 0755 "$destdir$sysconfdir/hyper2kvm/templates" "$destdir$sysconfdir/hyper2kvm/hooks"

docdir=$destdir$prefix/share/doc/hyper2kvm
for f in "$src"/README.md "$src"/docs/*.md; do
	put 0644 "$f" "$docdir/$(basename "$f")"
done

# Completions and man pages come from the CLI itself.
share=$destdir$prefix/share
zshdir=$share/zsh/site-functions
[[ $prefix == /usr ]] && zshdir=$share/zsh/vendor-completions # Debian's fpath
install -d -m 0755 "$share/bash-completion/completions" "$zshdir" "$share/fish/vendor_completions.d"
"$bin/hyperctl" completion bash >"$share/bash-completion/completions/hyperctl"
"$bin/hyperctl" completion zsh >"$zshdir/_hyperctl"
"$bin/hyperctl" completion fish >"$share/fish/vendor_completions.d/hyperctl.fish"
chmod 0644 "$share/bash-completion/completions/hyperctl" "$zshdir/_hyperctl" "$share/fish/vendor_completions.d/hyperctl.fish"

for b in hyperctl hyper2kvmd; do
	man=$(mktemp -d)
	if "$bin/$b" man "$man" >/dev/null 2>&1; then
		for p in "$man"/*.[1-8]; do
			sec=${p##*.}
			install -d -m 0755 "$share/man/man$sec"
			gzip -9n <"$p" >"$share/man/man$sec/$(basename "$p").gz"
			chmod 0644 "$share/man/man$sec/$(basename "$p").gz"
		done
	elif [[ -f $src/packaging/$b.8 ]]; then
		install -d -m 0755 "$share/man/man8"
		gzip -9n <"$src/packaging/$b.8" >"$share/man/man8/$b.8.gz"
		chmod 0644 "$share/man/man8/$b.8.gz"
	else
		echo "install: $b has no man subcommand and no packaging/$b.8; no man page for it"
	fi
	rm -rf "$man"
done
