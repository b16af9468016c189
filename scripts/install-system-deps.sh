#!/usr/bin/env bash
# Install the system services Instrumetry runs against: Mosquitto, PostgreSQL
# and the Apache-licensed TimescaleDB build, plus the tools the tests use.
#
# Idempotent: every step checks first and skips what is already there, so it
# is cheap to call from `./tasks demo` and `./tasks test` on every run.
#
# Debian 13 ships postgresql-17-timescaledb. Debian 12 has no binary package,
# so we build Debian 13's source package against the local PostgreSQL. The
# trixie deb-src line lives in a sources list of its own with its own list
# directory, so the machine's installed packages are never mixed with trixie's.
set -euo pipefail

log() { printf '[install] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    SUDO=sudo
else
    SUDO=
fi

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
}

apt_install_missing() {
    local missing=()
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_update_once
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Services and the command-line tools the tests and benchmarks drive (Prometheus: the
# pipeline dashboard's commit-lag panel is tested against a real one).
apt_install_missing python3 python3-venv mosquitto mosquitto-clients postgresql postgresql-contrib socat ca-certificates fonts-noto-cjk prometheus

PG_MAJOR=$(ls /usr/lib/postgresql | sort -n | tail -1)
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
EXT_CONTROL=/usr/share/postgresql/$PG_MAJOR/extension/timescaledb.control

if [[ -f $EXT_CONTROL ]]; then
    log "TimescaleDB for PostgreSQL $PG_MAJOR already installed"
    exit 0
fi

apt_update_once
if apt-cache show "postgresql-$PG_MAJOR-timescaledb" >/dev/null 2>&1; then
    apt_install_missing "postgresql-$PG_MAJOR-timescaledb"
    log "installed postgresql-$PG_MAJOR-timescaledb"
    exit 0
fi

log "no binary TimescaleDB for PostgreSQL $PG_MAJOR: building Debian 13's source package"
apt_install_missing "postgresql-server-dev-$PG_MAJOR" build-essential cmake dpkg-dev libssl-dev libkrb5-dev

APT_DIR=/var/lib/instrumetry/apt-trixie-src
$SUDO mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/parts"
echo "deb-src http://deb.debian.org/debian trixie main" | $SUDO tee "$APT_DIR/sources.list" >/dev/null
APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/parts"
    -o "Dir::State::Lists=$APT_DIR/lists"
)
$SUDO apt-get "${APT_OPTS[@]}" update -qq

BUILD_DIR=$(mktemp -d)
chmod 755 "$BUILD_DIR"  # apt-get source downloads as _apt
trap 'rm -rf "$BUILD_DIR"' EXIT
(
    cd "$BUILD_DIR"
    apt-get "${APT_OPTS[@]}" source -qq timescaledb >/dev/null
    cd timescaledb-*/
    ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="$PG_CONFIG" >"$BUILD_DIR/bootstrap.log" 2>&1 || {
        cat "$BUILD_DIR/bootstrap.log" >&2; log "TimescaleDB bootstrap failed"; exit 1; }
    cd build
    make -j"$(nproc)" >/dev/null
    $SUDO make install >/dev/null
)
log "built and installed TimescaleDB for PostgreSQL $PG_MAJOR"
