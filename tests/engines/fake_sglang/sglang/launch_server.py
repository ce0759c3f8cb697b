"""run_server(server_args): records its kwargs, process and a child (standing in for sglang's scheduler), then,
by $FAKE_SGLANG_MODE: `serve` (default) answers /health (503 twice first, as sglang while it warms up),
/server_info, /generate, /abort_request, the weight / memory endpoints, /freeze_gc (404 with $FAKE_SGLANG_NO_FREEZE)
and /fake/state (its health-check and /freeze_gc counts and the /generate bodies it got); `die` raises at start;
`hang` never listens."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sglang import record


def run_server(server_args):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    record("server.json", {"kwargs": server_args.given, "pid": os.getpid(), "pgid": os.getpgid(0), "child": child.pid,
                           "force_stream_interval": os.environ.get("SGLANG_FORCE_STREAM_INTERVAL")})
    mode = os.environ.get("FAKE_SGLANG_MODE", "serve")
    print("fake sglang: loading the model", flush=True)
    if mode == "die":
        raise RuntimeError("fake sglang: CUDA out of memory")
    if mode == "hang":
        time.sleep(600)
    state = {"health": 0, "requests": [], "freeze_gc": 0}

    class Handler(BaseHTTPRequestHandler):
        def _json(self, obj, status=200):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                state["health"] += 1
                self._json({}, 200 if state["health"] > 2 else 503)
            elif self.path == "/server_info":
                info = dataclasses.asdict(server_args)
                info["cuda_graph_config"] = {"decode": {"max_bs": server_args.cuda_graph_max_bs_decode}}
                self._json(info)
            elif self.path == "/freeze_gc":
                state["freeze_gc"] += 1
                if os.environ.get("FAKE_SGLANG_NO_FREEZE"):
                    self._json({"detail": "Not Found"}, 404)
                else:
                    self._json({}, 200)
            elif self.path == "/fake/state":
                self._json(state)
            else:
                self._json({"error": {"message": "not found"}}, 404)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/generate":
                state["requests"].append(body)
                sp, ids = body["sampling_params"], list(body["input_ids"])
                out, stop = [], set(sp.get("stop_token_ids") or [])
                finish = {"type": "length", "length": sp["max_new_tokens"]}
                while len(out) < sp["max_new_tokens"]:
                    out.append(((out or ids)[-1] * 7 + 3) % 1000)
                    if out[-1] in stop:
                        finish = {"type": "stop", "matched": out[-1]}
                        break
                self._json({"output_ids": out, "meta_info": {"finish_reason": finish, "prompt_tokens": len(ids),
                            "output_token_logprobs": [[-0.5, t, None] for t in out]}})
            else:
                self._json({"success": True, "message": "ok", "num_paused_requests": 0})

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((server_args.host, server_args.port), Handler).serve_forever()
