"""A Connect controller made with connect-python's own server (an ASGI app under uvicorn, as Iris's
controller is): it accepts every registration and report and appends each request, as proto3 JSON
on one line, to a file the Rust test reads.

Usage: controller.py PORT RECORD_FILE
"""

import json
import sys

import irisgen
import uvicorn
from google.protobuf.json_format import MessageToDict

pb, stubs = irisgen.load()
C = pb.Controller


class Recorder:
    def __init__(self, path):
        self.path = path

    def record(self, kind, request, ctx):
        entry = {
            "kind": kind,
            "authorization": ctx.request_headers().get("authorization", ""),
            "request": MessageToDict(request),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    async def register_worker(self, request, ctx):
        self.record("register", request, ctx)
        return C.RegisterWorkerResponse(accepted=True, controller_address="", should_reset=False)

    async def report_task_state(self, request, ctx):
        self.record("report", request, ctx)
        return C.ReportTaskStateResponse()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    app = stubs.ControllerServiceASGIApplication(Recorder(path))
    print("controller ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
