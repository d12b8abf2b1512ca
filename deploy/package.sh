#!/usr/bin/env bash
# Builds the Debian packages into target/debian/:
#   reachmap-agent      /usr/bin/reachmap-agent, its unit (enabled on install,
#                       not started), its system user (sysusers.d), and
#                       /etc/reachmap/agent.toml
#   reachmap-collector  /usr/bin/reachmap-collector and /usr/bin/reachmap, its
#                       unit (enabled, not started), /etc/reachmap/collector.toml
# each with man pages made from --help. Usage:
#   deploy/package.sh            build (release binaries, man pages, .debs)
#   deploy/package.sh --check    build, then check the packages for real
#                                (root): their contents, lintian, and an
#                                install, upgrade, remove and purge in a
#                                Debian chroot (debootstrap, cached under
#                                the target dir) - nothing is installed on
#                                this machine but the tools
#   deploy/package.sh --check-built   the same checks of the .debs already
#                                in target/debian, without building
# Installs what it needs when missing: cargo-deb (cargo install), help2man,
# and for --check lintian and debootstrap (apt-get, as root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/common.sh
source deploy/common.sh

check=0
build=1
case ${1:-} in
"") ;;
--check) check=1 ;;
--check-built) check=1 build=0 ;;
-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
*) echo "usage: $0 [--check | --check-built]" >&2; exit 2 ;;
esac

section() {
    printf '\n==== %s ====\n' "$*"
}

apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing $*: install it (apt-get install $*) or run as root" >&2
        exit 1
    fi
    echo "installing $*"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

section "tools"
ensure_cargo
if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb is missing: cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
fi
need=()
command -v help2man >/dev/null || need+=(help2man)
command -v man >/dev/null || need+=(man-db) # its --warnings check the pages
((${#need[@]} == 0)) || apt_install "${need[@]}"
if ((check)); then
    need=()
    command -v file >/dev/null || need+=(file)
    command -v lintian >/dev/null || need+=(lintian)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    ((${#need[@]} == 0)) || apt_install "${need[@]}"
fi
echo "$(cargo deb --version), $(help2man --version | head -n1)"

target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[[ -n $target ]] || { echo "cannot find cargo's target directory" >&2; exit 1; }
out="$target/debian"

# The build (skipped by --check-built), not indented: the roff below must
# start its lines.
if ((build)); then
section "cargo build --release"
cargo build --release -p reachmap-agent -p reachmap-collector --bins

section "man pages (help2man, from --help)"
man_dir="$target/release/man"
rm -rf "$man_dir"
mkdir -p "$man_dir"

# roff_verbatim: stdin as a no-fill block, safe for roff.
roff_verbatim() {
    echo ".nf"
    sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
    echo ".fi"
}

# man_page BINARY NAME FILES SEEALSO SUBCOMMAND...: BINARY.1.gz, with every
# subcommand's own --help (two levels: `token create`) in COMMANDS IN DETAIL.
# SUBCOMMAND may be two words (`ca pin`) only through the nesting below.
man_page() {
    local binary=$1 name=$2 files=$3 see_also=$4
    shift 4
    local bin="$target/release/$binary" include="$man_dir/$binary.h2m" sub subsub
    {
        if (($#)); then
            # After OPTIONS, as a section of its own.
            echo "[>OPTIONS]"
            echo '.SH "COMMANDS IN DETAIL"'
            for sub in "$@"; do
                echo ".SS \"$binary $sub\""
                # shellcheck disable=SC2086
                "$bin" $sub --help | roff_verbatim
                # Nested commands (token create, ca pin...): their help too.
                # shellcheck disable=SC2086
                for subsub in $("$bin" $sub --help | awk '
                        /^Commands:/ { inside = 1; next }
                        inside && /^  [a-z]/ && $1 != "help" { print $1 }
                        inside && /^$/ { inside = 0 }'); do
                    echo ".SS \"$binary $sub $subsub\""
                    # shellcheck disable=SC2086
                    "$bin" $sub "$subsub" --help | roff_verbatim
                done
            done
        fi
        echo "[FILES]"
        echo "$files"
        echo "[SEE ALSO]"
        echo "$see_also"
        echo "[REPORTING BUGS]"
        echo "The project's README.md, installed in /usr/share/doc."
    } >"$include"
    help2man --no-info --section 1 --name "$name" --include "$include" \
        --output "$man_dir/$binary.1" "$bin"
    # Any warning from man about the page is a failure.
    local warnings
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$man_dir/$binary.1" 2>&1 >/dev/null || true)
    if [[ -n $warnings ]]; then
        echo "$warnings" >&2
        echo "man reports problems in $man_dir/$binary.1" >&2
        exit 1
    fi
    gzip -9n "$man_dir/$binary.1"
    rm -f "$include"
    echo "$man_dir/$binary.1.gz"
}

man_page reachmap-agent "the reachmap agent: streams this host's network facts to the collector" \
    '.TP
/etc/reachmap/agent.toml
The configuration (every key is also a flag and an environment variable; those win).
.TP
/var/lib/reachmap-agent
The state: the node key and certificate, the kernel log position and unsent events.
.TP
/lib/systemd/system/reachmap-agent.service
The unit: the reachmap-agent user with only the capabilities the agent needs.' \
    'reachmap(1), reachmap-collector(1), systemd.exec(5)' \
    snapshot
man_page reachmap-collector "the reachmap collector: fleet state, probe plans and the query API" \
    '.TP
/etc/reachmap/collector.toml
The configuration (every key is also a flag and an environment variable; those win).
.TP
/var/lib/reachmap
The data: the store (store.db) and the CA (tls/).
.TP
/lib/systemd/system/reachmap-collector.service
The unit: a dynamic user with no capabilities.' \
    'reachmap(1), reachmap-agent(1)' \
    ca token issue-client
man_page reachmap "ask the reachmap collector who can reach whom, and why not" \
    '.TP
~/.config/reachmap/credentials.pem
The credentials bundle used when neither --credentials nor REACHMAP_CREDENTIALS is given.' \
    'reachmap-collector(1), reachmap-agent(1)' \
    nodes node token matrix why events history test-port

section "cargo deb"
mkdir -p "$out"
for pkg in reachmap-agent reachmap-collector; do
    cargo deb --no-build --strip -p "$pkg" -o "$out/"
done
fi
version=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"name":"reachmap-agent","version":"\([^"]*\)".*/\1/p')
arch=$(dpkg --print-architecture)
agent_deb="$out/reachmap-agent_${version}-1_${arch}.deb"
collector_deb="$out/reachmap-collector_${version}-1_${arch}.deb"
for deb in "$agent_deb" "$collector_deb"; do
    [[ -f $deb ]] || { echo "cargo deb made no $deb" >&2; exit 1; }
    echo "$deb: $(du -h "$deb" | cut -f1)"
done

((check)) || exit 0

# ---------------------------------------------------------------- checks
if [[ $(id -u) -ne 0 ]]; then
    echo "--check installs the packages into a chroot: run it as root" >&2
    exit 1
fi
failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}

section "package contents"
# expect DEB PATH...: every PATH is in the package.
expect() {
    local deb=$1 path listing
    shift
    listing=$(dpkg-deb --contents "$deb" | awk '{print $6}' | sed 's#^\./#/#')
    for path in "$@"; do
        grep -qx -- "$path" <<<"$listing" || fail "$(basename "$deb") has no $path"
    done
}
# control_field DEB FIELD
control_field() {
    dpkg-deb --field "$1" "$2"
}
expect "$agent_deb" /usr/bin/reachmap-agent /lib/systemd/system/reachmap-agent.service \
    /usr/lib/sysusers.d/reachmap-agent.conf /etc/reachmap/agent.toml \
    /usr/share/man/man1/reachmap-agent.1.gz /usr/share/doc/reachmap-agent/copyright \
    /usr/share/doc/reachmap-agent/changelog.Debian.gz
expect "$collector_deb" /usr/bin/reachmap-collector /usr/bin/reachmap \
    /lib/systemd/system/reachmap-collector.service /etc/reachmap/collector.toml \
    /usr/share/man/man1/reachmap-collector.1.gz /usr/share/man/man1/reachmap.1.gz \
    /usr/share/doc/reachmap-collector/copyright
for pair in "$agent_deb:/etc/reachmap/agent.toml" "$collector_deb:/etc/reachmap/collector.toml"; do
    deb=${pair%%:*} conffile=${pair#*:}
    conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles 2>/dev/null || true)
    grep -qx "$conffile" <<<"$conffiles" || fail "$(basename "$deb"): $conffile is not a conffile (conffiles: ${conffiles:-none})"
    for script in postinst prerm postrm; do
        dpkg-deb --ctrl-tarfile "$deb" | tar -tf - "./$script" >/dev/null 2>&1 ||
            fail "$(basename "$deb") has no $script"
    done
done
agent_depends=$(control_field "$agent_deb" Depends)
for dep in libc6 nftables iptables adduser; do
    grep -qw "$dep" <<<"$agent_depends" || fail "reachmap-agent does not depend on $dep (Depends: $agent_depends)"
done
# Binaries stripped; the packaged unit is the one in deploy/systemd.
for deb in "$agent_deb" "$collector_deb"; do
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    for b in "$x"/usr/bin/*; do
        file "$b" | grep -q 'not stripped' && fail "$(basename "$deb"): $(basename "$b") is not stripped"
    done
    for u in "$x"/lib/systemd/system/*.service; do
        cmp -s "$u" "deploy/systemd/$(basename "$u")" || fail "$(basename "$deb"): $(basename "$u") differs from deploy/systemd"
    done
    rm -rf "$x"
done
for deb in "$agent_deb" "$collector_deb"; do
    echo "$(basename "$deb"): $(control_field "$deb" Installed-Size) KiB installed, $(du -h "$deb" | cut -f1) packed"
    echo "  Depends: $(control_field "$deb" Depends)"
    echo "  conffiles: $(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | tr '\n' ' ')"
done

section "lintian"
lintian_out=$(lintian --no-tag-display-limit --display-info "$agent_deb" "$collector_deb" 2>&1 || true)
echo "${lintian_out:-lintian: no findings}"
if grep -q '^E: ' <<<"$lintian_out"; then
    fail "lintian reports errors"
fi

section "install, upgrade, remove and purge in a chroot"
# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
cache="$target/debian-chroot"
base="$cache/$codename-base"
# The base: minbase plus what the packages depend on, and systemd (for
# systemd-sysusers); made once (about 30 s), then copied for each check.
includes=systemd,nftables,iptables,adduser
if [[ $(cat "$base.done" 2>/dev/null) != "$includes" ]]; then
    rm -rf "$base" "$base.done"
    mkdir -p "$cache"
    echo "debootstrap $codename into $base (once)"
    debootstrap --variant=minbase --include="$includes" "$codename" "$base" \
        http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
        { tail -n 20 "$cache/debootstrap.log" >&2; echo "debootstrap failed" >&2; exit 1; }
    echo "$includes" >"$base.done"
fi
root="$cache/run-$$"
cleanup() {
    rm -rf "$root"
}
trap cleanup EXIT

# new_root: a fresh copy of the base, with /run/systemd/system (so that the
# maintainer scripts act as under a running systemd) and a systemctl that
# logs every call: what works on unit files offline (preset, enable,
# disable, is-enabled... which deb-systemd-helper uses) goes to the real
# one, what needs a running manager (start, stop, try-restart,
# daemon-reload) is only logged.
new_root() {
    rm -rf "$root"
    cp -a "$base" "$root"
    mkdir -p "$root/run/systemd/system"
    mv "$root/usr/bin/systemctl" "$root/usr/bin/systemctl.real"
    cat >"$root/usr/bin/systemctl" <<'EOF'
#!/bin/sh
echo "systemctl $*" >>/var/log/systemctl.calls
for arg in "$@"; do
	case $arg in
	--root=* | --version) exec /usr/bin/systemctl.real "$@" ;;
	esac
done
for arg in "$@"; do
	case $arg in
	preset | enable | disable | reenable | mask | unmask | is-enabled)
		exec /usr/bin/systemctl.real --root=/ "$@" ;;
	esac
done
exit 0
EOF
    chmod 755 "$root/usr/bin/systemctl"
    : >"$root/var/log/systemctl.calls"
    cp "$agent_deb" "$collector_deb" "$root/tmp/"
}
in_root() {
    # A private mount namespace: /proc goes away with it.
    # shellcheck disable=SC2016 # expanded by the inner sh
    unshare --mount --propagation private -- sh -c \
        'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$root" \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"
}
# calls: the systemctl calls since the last look, for our units.
calls() {
    grep 'reachmap' "$root/var/log/systemctl.calls" || true
    : >"$root/var/log/systemctl.calls"
}
wants=/etc/systemd/system/multi-user.target.wants
agent=/tmp/$(basename "$agent_deb")
collector=/tmp/$(basename "$collector_deb")

new_root
echo "-- dpkg -i both packages (systemd-sysusers present)"
in_root dpkg -i "$agent" "$collector" || fail "dpkg -i failed"
entry=$(in_root getent passwd reachmap-agent || true)
echo "user: ${entry:-none}"
IFS=: read -r _ _ uid _ _ home shell <<<"$entry"
[[ -n $entry && $uid -lt 1000 && $home == /nonexistent && $shell == /usr/sbin/nologin ]] ||
    fail "no system user reachmap-agent with home /nonexistent and a nologin shell (${entry:-none})"
in_root getent group reachmap-agent >/dev/null || fail "no group reachmap-agent"
perms=$(in_root stat -c '%U:%G %a' /etc/reachmap/agent.toml)
[[ $perms == "root:reachmap-agent 640" ]] || fail "/etc/reachmap/agent.toml is $perms, not root:reachmap-agent 640"
for unit in reachmap-agent reachmap-collector; do
    link=$(readlink "$root$wants/$unit.service" || true)
    [[ $link == /lib/systemd/system/$unit.service ]] ||
        fail "$unit.service is not enabled ($wants/$unit.service -> ${link:-nothing})"
done
c=$(calls)
echo "systemctl calls: ${c:-none}"
grep -qE ' (start|restart|try-restart|reload-or-restart) .*reachmap' <<<"$c" &&
    fail "the first installation started a unit: $c"
for b in reachmap-agent reachmap-collector reachmap; do
    v=$(in_root "$b" --version 2>&1) || fail "$b --version failed in the chroot: $v"
    echo "$v"
done
# The installed units, with the installed paths, verified by systemd itself.
set +e
report=$(in_root systemd-analyze verify --man=no /lib/systemd/system/reachmap-agent.service \
    /lib/systemd/system/reachmap-collector.service 2>&1)
status=$?
set -e
if ((status != 0)) || grep -q reachmap <<<"$report"; then
    echo "$report"
    fail "systemd-analyze verify of the installed units failed"
else
    echo "installed units verified (systemd-analyze verify in the chroot)"
fi

echo "-- upgrade (dpkg -i again): a running unit is restarted, none started"
in_root dpkg -i "$agent" "$collector" >/dev/null || fail "reinstalling failed"
c=$(calls)
echo "systemctl calls: ${c:-none}"
grep -q 'try-restart reachmap-agent.service' <<<"$c" || fail "the upgrade did not try-restart reachmap-agent: $c"
grep -qE ' (start|restart) .*reachmap' <<<"$c" && fail "the upgrade started a unit: $c"

echo "-- an operator's disable survives an upgrade"
in_root systemctl.real --root=/ disable reachmap-agent.service
in_root dpkg -i "$agent" >/dev/null || fail "reinstalling failed"
[[ -e $root$wants/reachmap-agent.service ]] && fail "the upgrade enabled reachmap-agent again after the operator disabled it"
in_root systemctl.real --root=/ enable reachmap-agent.service

echo "-- dpkg --remove: stopped, masked, config kept"
mkdir -p "$root/var/lib/reachmap-agent"
echo state >"$root/var/lib/reachmap-agent/kmsg.pos"
calls >/dev/null
in_root dpkg --remove reachmap-agent reachmap-collector || fail "dpkg --remove failed"
c=$(calls)
echo "systemctl calls: ${c:-none}"
for unit in reachmap-agent reachmap-collector; do
    grep -q "stop $unit.service" <<<"$c" || fail "removing did not stop $unit"
    [[ $(readlink "$root/etc/systemd/system/$unit.service") == /dev/null ]] || fail "removing did not mask $unit"
done
[[ -e $root/usr/bin/reachmap-agent || -e $root/usr/bin/reachmap ]] && fail "removing left a binary"
[[ -f $root/etc/reachmap/agent.toml ]] || fail "removing took the config (it is kept until purge)"

echo "-- dpkg --purge: enablement, mask, config and agent state gone"
in_root dpkg --purge reachmap-agent reachmap-collector || fail "dpkg --purge failed"
for unit in reachmap-agent reachmap-collector; do
    [[ -e $root/etc/systemd/system/$unit.service || -L $root/etc/systemd/system/$unit.service ]] && fail "purge left the mask of $unit"
    [[ -L $root$wants/$unit.service ]] && fail "purge left $unit enabled"
done
[[ -e $root/etc/reachmap ]] && fail "purge left /etc/reachmap: $(ls -A "$root/etc/reachmap")"
[[ -e $root/var/lib/reachmap-agent ]] && fail "purge left /var/lib/reachmap-agent"
left=$(grep -rl reachmap "$root/var/lib/systemd/deb-systemd-helper-enabled" "$root/var/lib/systemd/deb-systemd-helper-masked" 2>/dev/null || true)
[[ -n $left ]] && fail "purge left deb-systemd-helper state: $left"
in_root dpkg -s reachmap-agent >/dev/null 2>&1 && fail "reachmap-agent is still known to dpkg"
echo "purged; the system user reachmap-agent stays, as Debian keeps system users: $(in_root getent passwd reachmap-agent || echo none)"

new_root
echo "-- dpkg -i reachmap-agent without systemd-sysusers: the user from adduser"
rm -f "$root/usr/bin/systemd-sysusers" "$root/bin/systemd-sysusers"
in_root dpkg -i "$agent" >/dev/null || fail "dpkg -i without systemd-sysusers failed"
entry=$(in_root getent passwd reachmap-agent || true)
echo "user: ${entry:-none}"
IFS=: read -r _ _ uid _ _ home shell <<<"$entry"
[[ -n $entry && $uid -lt 1000 && $home == /nonexistent && $shell == /usr/sbin/nologin ]] ||
    fail "adduser made no system user reachmap-agent with home /nonexistent and a nologin shell (${entry:-none})"
[[ $(in_root stat -c '%U:%G %a' /etc/reachmap/agent.toml) == "root:reachmap-agent 640" ]] ||
    fail "/etc/reachmap/agent.toml is not root:reachmap-agent 640 after adduser"
in_root dpkg --purge reachmap-agent >/dev/null || fail "dpkg --purge failed"

section "result"
if ((failed)); then
    echo "deploy/package.sh --check: FAILED (see FAIL lines above)" >&2
    exit 1
fi
echo "packages checked: $agent_deb, $collector_deb"
