"""`agent-rl tools validate FILE...` and `agent-rl tools call FILE NAME '{json}'`.

Output piped into a reader that stops early (`agent-rl tools call ... | head -3`) ends quietly: the rest of the
output is dropped, no BrokenPipeError, and the exit status is still the command's."""
from __future__ import annotations

import asyncio
import json
import os
import sys

HELP = "Validate tool YAML files or make one real tool call"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="tools_command", metavar="ACTION")
    v = sub.add_parser("validate", help="check tool YAML files: fields, names, JSON Schemas, classes (exit 1 if any file is bad)")
    v.add_argument("files", nargs="+", metavar="FILE")
    c = sub.add_parser("call", help="create one instance, make one real call, print observation, rewards and metrics")
    c.add_argument("file", metavar="FILE", help="tool YAML")
    c.add_argument("name", metavar="NAME", help="tool name (tool_schema.function.name)")
    c.add_argument("arguments", metavar="JSON", nargs="?", default="{}", help="call arguments as a JSON object")
    c.add_argument("--create-kwargs", default="{}", help="JSON object passed to create (e.g. '{\"ground_truth\": \"42\"}')")
    c.add_argument("--execute-kwargs", default="{}", help="JSON object passed to execute")
    c.add_argument("--max-tokens", type=int, default=256, help="tool-response budget (characters unless --tokenizer is given)")
    c.add_argument("--truncate-side", default="middle", choices=["head", "middle", "tail"])
    c.add_argument("--tokenizer", default=None, help="tokenizer folder to count the budget in tokens")
    c.add_argument("--kg-store", default=None, help="start a KG server on a free loopback port for this call (kg_query)")
    parser.set_defaults(_tools_parser=parser)


def _drop_stdout() -> None:
    """The reader of stdout went away: send what is left to /dev/null, so that neither a later print nor the
    interpreter's final flush raises BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):   # no real file descriptor (captured output): nothing to redirect
        pass


def _out(text: str = "") -> None:
    try:
        print(text)
    except BrokenPipeError:
        _drop_stdout()


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def _validate(files) -> int:
    from agent_rl.tool_runtime.errors import ToolConfigError
    from agent_rl.tool_runtime.loader import load_tool_specs_and_tools

    status = 0
    for path in files:
        try:
            pairs = load_tool_specs_and_tools(path)
        except ToolConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        if not pairs:
            _out(f"OK {path}: no tools declared")
        for spec, _tool in pairs:
            _out(f"OK {path}: {spec.name} ({spec.class_name})")
    return status


def _json_arg(text: str, what: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"error: {what} must be a JSON object")
    return value


async def _call(args) -> int:
    from agent_rl.tool_runtime.runtime import ToolRuntime

    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    rt = ToolRuntime.from_yaml(args.file, tokenizer=tokenizer, max_tool_response_tokens=args.max_tokens,
                               truncate_side=args.truncate_side, only=[args.name])
    kwargs = {args.name: {"create_kwargs": _json_arg(args.create_kwargs, "--create-kwargs"),
                          "execute_kwargs": _json_arg(args.execute_kwargs, "--execute-kwargs")}}
    try:
        async with rt.session("cli", kwargs) as s:
            if args.name in s.create_errors:
                print(f"warning: {s.create_errors[args.name]}", file=sys.stderr)
            rec = await s.call(args.name, args.arguments)
            rewards = await s.calc_rewards()
    finally:
        await rt.close()
    _out("observation:")
    _out(rec.observation)
    _out(f"status: {rec.status}")
    _out(f"step_reward: {rec.step_reward}")
    _out(f"calc_reward: {rewards.get(args.name, 0.0)}")
    _out(f"latency_s: {rec.latency_s:.4f}")
    _out(f"call metrics: {json.dumps(rec.metrics, default=str, sort_keys=True)}")
    _out(f"runtime metrics: {json.dumps(rt.metrics.snapshot(), sort_keys=True)}")
    from agent_rl.tool_runtime.record import OK

    return 0 if rec.status == OK else 1


def run(args) -> int:
    try:
        return _run(args)
    finally:
        _flush()   # here, not at exit: a reader that left (`| head`) is handled, not a traceback


def _run(args) -> int:
    from agent_rl.tool_runtime.errors import ToolConfigError

    cmd = getattr(args, "tools_command", None)
    if cmd == "validate":
        return _validate(args.files)
    if cmd == "call":
        server = None
        try:
            if args.kg_store:
                from tools.kg_query import ENV_URL
                from tools.kg_server import start_kg_server_thread

                server = start_kg_server_thread(args.kg_store, "127.0.0.1", 0)
                os.environ[ENV_URL] = server.url
            return asyncio.run(_call(args))
        except ToolConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            if server is not None:
                server.stop()
    args._tools_parser.print_help()
    return 2
