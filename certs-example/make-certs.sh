#!/usr/bin/env bash
# Makes an example CA and a server certificate signed by it (for localhost and
# 127.0.0.1), as used in the README's configuration example. For trying the gateway
# with a CA a browser or client can be told to trust; never use these keys in production.
set -euo pipefail
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=vm-gateway example CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
  -out server.crt -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n')
rm -f server.csr ca.srl
chmod 600 ca.key server.key
cat > gateway.toml <<'TOML'
# gateway serve --config certs-example/gateway.toml
data_dir = "../gateway-data"
public_url = "https://localhost:8443"
[public]
listen = "127.0.0.1:8443"
cert = "server.crt"
key = "server.key"
[admin]
listen = "127.0.0.1:8444"
TOML
echo "made ca.crt, server.crt/server.key and gateway.toml in $(pwd)"
