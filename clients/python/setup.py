"""Generates the gRPC stubs from the repository's proto/ at build time, so the
package always matches the protos it was built from (nothing generated is
committed). Needs grpcio-tools, which pip installs as a build requirement."""

import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
OUT = os.path.join(HERE, "thresig_client", "_proto")
FILES = ["thresig/signer/v1/signer.proto", "thresig/admin/v1/admin.proto"]


def generate():
    from grpc_tools import protoc

    if not os.path.isdir(PROTO):
        sys.exit(f"thresig-client: {PROTO} not found (build from a checkout of the repository)")
    for f in FILES:
        d = os.path.join(OUT, os.path.dirname(f))
        os.makedirs(d, exist_ok=True)
    for d, _, _ in os.walk(OUT):
        init = os.path.join(d, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    args = ["protoc", f"-I{PROTO}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", f"--pyi_out={OUT}"]
    if protoc.main(args + FILES) != 0:
        sys.exit("thresig-client: protoc failed")
    # The generated modules import each other as top-level `thresig.*`;
    # make those imports relative to this package.
    for d, _, files in os.walk(OUT):
        for name in files:
            if name.endswith((".py", ".pyi")) and name != "__init__.py":
                p = os.path.join(d, name)
                text = open(p).read()
                text = text.replace("from thresig.", "from thresig_client._proto.thresig.")
                open(p, "w").write(text)


# Before setup(): setuptools looks for the generated packages' directories
# as soon as it reads the metadata.
generate()
setup()
