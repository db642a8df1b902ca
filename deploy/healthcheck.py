"""The container's healthcheck: exit 0 when this node's /readyz answers 200, else 1 with the
reason (docs/operations.md "Health"). Over HTTPS, verified by the cluster CA, when the CA file
exists (tls.client_auth = "optional" lets a probe in without a client certificate)."""

import os
import ssl
import sys
import urllib.request

ADDR = os.environ.get("UNIVRS_HEALTH_ADDR", "127.0.0.1:8000")
CA = os.environ.get("UNIVRS_HEALTH_CA", "/etc/univrs/tls/ca.crt")

context = None
if os.path.exists(CA):
    context = ssl.create_default_context(cafile=CA)
    context.check_hostname = False  # loopback: the certificate names the node's public hosts
url = f"{'https' if context else 'http'}://{ADDR}/readyz"
try:
    urllib.request.urlopen(url, timeout=2, context=context)
except Exception as exc:
    sys.exit(f"not ready: {exc}")
