"""A stand-in for sglang in CPU tests (tests/engines/test_sglang_server.py; the tests copy this folder to a tmp dir
and put it on the path). It records how it was started under $FAKE_SGLANG_DIR: `Engine` (in process) writes
engine_kwargs.json, `launch_server.run_server` (a server process) writes server.json."""
import json
import os

__version__ = "0.0.0+fake"


def record(name, obj):
    path = os.path.join(os.environ["FAKE_SGLANG_DIR"], name)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


class Engine:
    """sglang.Engine's start as of 0.5.17: log_level "error" unless given, then ServerArgs(**kwargs)."""

    def __init__(self, **kwargs):
        from sglang.srt.server_args import ServerArgs

        # the environment sglang's spawned scheduler processes would inherit
        started = {"kwargs": kwargs, "force_stream_interval": os.environ.get("SGLANG_FORCE_STREAM_INTERVAL")}
        log_config = os.environ.get("SGLANG_LOGGING_CONFIG_PATH")   # read by sglang's processes at their start
        if log_config:
            with open(log_config) as f:
                started["log_config"] = json.load(f)
        record("engine_kwargs.json", started)
        with open(os.path.join(os.environ["FAKE_SGLANG_DIR"], "engine_starts.jsonl"), "a") as f:   # every start
            f.write(json.dumps(started) + "\n")
        kwargs.setdefault("log_level", "error")
        self.server_args = ServerArgs(**kwargs)
        self.tokenizer_manager = None

    def shutdown(self):
        pass
