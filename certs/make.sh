#!/usr/bin/env bash
# Regenerates certs/example/ with the OpenSSL command line (not with petrel), so that the
# tests read certificates and a CRL made by another X.509 implementation:
#   root.pem        self-signed root CA "petrel example root" (ECDSA P-256)
#   arc.pem         tenant CA "arc" with the policy of spec/wire.md example 3 (Ed25519)
#   foo.bar.pem     client certificate "foo.bar" issued by arc, console subscribe 20 (RSA 2048)
#   chain.pem       foo.bar.pem followed by arc.pem, as a client presents them
#   server.pem      server certificate for localhost / 127.0.0.1 issued by the root
#   root.crl.pem    the root's CRL (number 1) revoking arc, made by `openssl ca -gencrl`
#   arc.crl.pem     arc's CRL (number 1), revoking nothing
# Validity is 100 years, so the fixtures do not expire under the tests. The private keys
# are thrown away: nothing here can sign anything afterwards.
# Usage: certs/make.sh   (needs openssl 3)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/example"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cnf="$here/openssl.cnf"
days=36500

key() { # NAME ALGORITHM-ARGS...
    local name=$1; shift
    openssl genpkey "$@" -out "$name.key" 2>/dev/null
}
key root -algorithm EC -pkeyopt ec_paramgen_curve:P-256
key arc -algorithm ED25519
key leaf -algorithm RSA -pkeyopt rsa_keygen_bits:2048
key server -algorithm EC -pkeyopt ec_paramgen_curve:P-256

openssl req -config "$cnf" -new -x509 -key root.key -subj "/CN=petrel example root" \
    -days $days -extensions root_ca -set_serial 0x01 -out root.pem
openssl req -config "$cnf" -new -key arc.key -subj "/CN=arc" -out arc.csr
openssl x509 -req -in arc.csr -CA root.pem -CAkey root.key -set_serial 0x0a \
    -days $days -extfile "$cnf" -extensions tenant_ca -out arc.pem 2>/dev/null
openssl req -config "$cnf" -new -key leaf.key -subj "/CN=foo.bar" -out leaf.csr
openssl x509 -req -in leaf.csr -CA arc.pem -CAkey arc.key -set_serial 0x0b \
    -days $days -extfile "$cnf" -extensions console_leaf -out foo.bar.pem 2>/dev/null
openssl req -config "$cnf" -new -key server.key -subj "/CN=localhost" -out server.csr
openssl x509 -req -in server.csr -CA root.pem -CAkey root.key -set_serial 0x0c \
    -days $days -extfile "$cnf" -extensions server -out server.pem 2>/dev/null

crl() { # CA-NAME REVOKE-CERT-OR-EMPTY
    rm -rf ca-db && mkdir ca-db && : > ca-db/index.txt && echo 01 > ca-db/crlnumber
    if [ -n "$2" ]; then
        openssl ca -config "$cnf" -cert "$1.pem" -keyfile "$1.key" -revoke "$2" \
            -crl_reason keyCompromise 2>/dev/null
    fi
    openssl ca -config "$cnf" -gencrl -cert "$1.pem" -keyfile "$1.key" \
        -out "$1.crl.pem" 2>/dev/null
}
crl root arc.pem
crl arc ""

mkdir -p "$out"
cat foo.bar.pem arc.pem > chain.pem
cp root.pem arc.pem foo.bar.pem chain.pem server.pem root.crl.pem arc.crl.pem "$out/"
echo "wrote $(ls "$out" | wc -l) files to $out"
