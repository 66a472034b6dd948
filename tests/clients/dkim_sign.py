#!/usr/bin/env python3
"""Signs the message on stdin with dkimpy and writes the signed message to stdout.

The tests' DKIM signatures come from here, an implementation independent of the one
qqmx verifies with.
"""
import argparse
import sys

import dkim

parser = argparse.ArgumentParser()
parser.add_argument("--key", required=True, help="private key file (PEM for RSA, base64 seed for Ed25519)")
parser.add_argument("--selector", required=True)
parser.add_argument("--domain", required=True)
parser.add_argument("--algorithm", choices=["rsa-sha256", "ed25519-sha256"], default="rsa-sha256")
parser.add_argument("--canonicalize", default="relaxed/simple", help="header/body")
args = parser.parse_args()

message = sys.stdin.buffer.read()
with open(args.key, "rb") as f:
    key = f.read().strip()
header, body = args.canonicalize.split("/")
signature = dkim.sign(
    message,
    args.selector.encode(),
    args.domain.encode(),
    key,
    canonicalize=(header.encode(), body.encode()),
    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    signature_algorithm=args.algorithm.encode(),
)
sys.stdout.buffer.write(signature + message)
