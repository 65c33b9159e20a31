#!/usr/bin/env bash
# Debian packages the tests and experiments need, installed only when missing (a machine that has
# them pays nothing): espeak-ng synthesises the speech experiment's data, dataset-fashion-mnist
# holds the caption experiment's clothing images. Run as root, or with sudo available.
set -euo pipefail

missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
[ -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
((${#missing[@]})) || exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "system_deps.sh: error: need root or sudo to install ${missing[*]}" >&2
        exit 2
    }
    sudo="sudo"
fi
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
