#!/usr/bin/env bash
# Real sglang 0.5.17 on a CPU, beside the project's environment (tests/sglang_cpu, the README's test command):
#   bash scripts/sglang_cpu/setup.sh [DIR]     (default ~/.cache/agent-rl/sglang-cpu; ~25 s and 1.3 GB the first
#   time, nothing to do when DIR already holds what this script and its stubs install)
# DIR/site holds sglang and its pure-Python dependencies (installed --no-deps: sglang's own pins would replace this
# environment's torch and transformers), DIR/stubs the stand-ins for its GPU-only imports. Use it with
#   PYTHONPATH=DIR/stubs:DIR/site:<repo>
# and engine kwargs device=cpu, attention_backend=torch_native, disable_cuda_graph=true, enable_memory_saver=false.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$HOME/.cache/agent-rl/sglang-cpu}
stamp=$(cat "$0" $(find "$here/stubs" -type f | sort) | sha256sum | cut -c1-16)
if [ "$(cat "$dir/ready" 2>/dev/null)" = "$stamp" ]; then echo "sglang 0.5.17 ready in $dir"; exit 0; fi
rm -f "$dir/ready"
mkdir -p "$dir/wheels"
pip download -q --no-deps -d "$dir/wheels" sglang==0.5.17
# the versions the tests passed with (2026-12-05); sglang's own imports need them, our environment does not
pip install -q --no-deps --upgrade --target "$dir/site" "$dir"/wheels/sglang-0.5.17-*.whl \
  pybase64==1.5.1 triton==3.9.0 starlette==1.10.0 fastapi==0.165.0 uvloop==0.23.0 pyzmq==27.3.0 dill==0.4.1 \
  msgspec==0.23.0 openai==3.63.0 partial_json_parser==0.2.1.1.post7 xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 \
  sentencepiece==0.2.3 einops==0.8.2 compressed_tensors==0.20.1 loguru==0.7.3 uvicorn==0.55.0 setproctitle==1.3.8 \
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 python-multipart==0.0.34 orjson==3.13.0 ipython==9.18.1 traitlets==5.16.1
rm -rf "$dir/stubs" && cp -r "$here/stubs" "$dir/stubs"
PYTHONPATH="$dir/stubs:$dir/site" python -c "import sglang.srt.entrypoints.http_server" > "$dir/check.log" 2>&1 \
  || { tail -5 "$dir/check.log"; echo "sglang on CPU: the side install in $dir does not import (log: $dir/check.log)" >&2; exit 1; }
echo "$stamp" > "$dir/ready"
echo "sglang 0.5.17 ready in $dir"
