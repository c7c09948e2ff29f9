#!/bin/sh
# Makes a throw-away test CA and three certificates signed by it in DIR:
#   ca.pem / ca.key          the CA
#   server.pem / server.key  for participants and sagad's admin listener
#                            (subjectAltName localhost, 127.0.0.1)
#   client.pem / client.key  sagad's (and sagactl's) client certificate
#   rogue-ca.pem, rogue.pem / rogue.key  a certificate from another CA
# Keys are EC P-256 and owner-only. Used by tests/security; docs/SECURITY.md
# shows the same commands for a real deployment.
set -eu
dir=${1:?usage: gen-certs.sh DIR}
cd "$dir"
umask 077
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ca() { # name
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 2 -subj "/CN=saga test $1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$1.pem" 2>/dev/null
}
leaf() { # name ca usage
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\n' \
    "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca
leaf server ca serverAuth
leaf client ca clientAuth
ca rogue-ca
leaf rogue rogue-ca clientAuth
