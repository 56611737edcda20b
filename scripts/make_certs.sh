#!/usr/bin/env bash
# `make certs`: a local CA plus a server and a client certificate for TLS / mTLS on loopback.
# Usage: scripts/make_certs.sh [DIR]   (default var/certs). Existing files are kept.
set -euo pipefail
dir="${1:-var/certs}"
mkdir -p "$dir"
cd "$dir"
days=825

if [[ ! -f ca.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -keyout ca.key -out ca.crt \
        -subj "/CN=PACA local CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

issue() {  # name, subject CN, extended key usage, subjectAltName
    local name="$1" cn="$2" usage="$3" san="$4"
    [[ -f "$name.crt" ]] && return 0
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/CN=$cn" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$usage" "$san" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -out "$name.crt" -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue server "localhost" serverAuth "DNS:localhost,IP:127.0.0.1,IP:::1"
issue client "paca-client" clientAuth "DNS:paca-client"
chmod 600 ./*.key
echo "certificates in $(pwd): ca.crt, server.{crt,key}, client.{crt,key}"
