# Shared by scripts/run and scripts/test: install missing Debian/Ubuntu packages.
# Usage: ensure_packages CMD:PACKAGE ...   (PACKAGE is installed when CMD is missing)
ensure_packages() {
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        case "$cmd" in
            dpkg=*) dpkg -s "${cmd#dpkg=}" >/dev/null 2>&1 || missing+=("$pkg") ;;
            *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
        esac
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing missing packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building patchbay needs (a C compiler for SQLite and aws-lc; pkg-config
# and libopus for the Opus codec).
build_packages=(cc:build-essential pkg-config:pkg-config dpkg=libopus-dev:libopus-dev)

# The web console (console/dist, served at /console/): installed from the npm registry
# (never vendored) and built with Vite; npm ci runs only when the lockfile changed.
build_console() {
    ensure_packages node:nodejs npm:npm
    (
        cd console
        if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
            npm ci --no-audit --no-fund --loglevel=error
        fi
        npm run build --silent >/dev/null
    )
}
