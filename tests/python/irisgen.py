"""Generates the Python messages and connect-python stubs from proto/iris/cluster.proto at test
time (grpc_tools' protoc with the protoc-gen-connect-python plugin of the test venv) and imports
them, so the clients under test are the real generated ones, not ours."""

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():
    out = tempfile.mkdtemp(prefix="iris-pygen-")
    plugin = os.path.join(os.path.dirname(sys.executable), "protoc-gen-connect-python")
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            "-I", os.path.join(ROOT, "proto"),
            f"--python_out={out}",
            f"--plugin=protoc-gen-connect-python={plugin}",
            f"--connect-python_out={out}",
            os.path.join(ROOT, "proto", "iris", "cluster.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, out)
    from iris import cluster_pb2, cluster_connect  # noqa: E402

    return cluster_pb2, cluster_connect
