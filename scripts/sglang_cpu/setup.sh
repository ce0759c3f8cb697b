#!/usr/bin/env bash
# Real sglang 0.5.17 on a CPU, beside the project's environment (measurement and tests/sglang_cpu only, not CI):
#   bash scripts/sglang_cpu/setup.sh [DIR]     (default ~/.cache/agent-rl/sglang-cpu; a few minutes, ~1.3 GB)
# DIR/site holds sglang and its pure-Python dependencies (installed --no-deps: sglang's own pins would replace this
# environment's torch and transformers), DIR/stubs the stand-ins for its GPU-only imports. Use it with
#   PYTHONPATH=DIR/stubs:DIR/site:<repo>
# and engine kwargs device=cpu, attention_backend=torch_native, disable_cuda_graph=true, enable_memory_saver=false.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$HOME/.cache/agent-rl/sglang-cpu}
mkdir -p "$dir/wheels"
pip download -q --no-deps -d "$dir/wheels" sglang==0.5.17
pip install -q --no-deps --upgrade --target "$dir/site" "$dir"/wheels/sglang-0.5.17-*.whl \
  pybase64 triton starlette fastapi uvloop pyzmq dill msgspec openai partial_json_parser xgrammar apache-tvm-ffi \
  sentencepiece einops compressed_tensors loguru uvicorn setproctitle soundfile cffi pycparser python-multipart
rm -rf "$dir/stubs" && cp -r "$here/stubs" "$dir/stubs"
PYTHONPATH="$dir/stubs:$dir/site" python -c "import sglang.srt.entrypoints.http_server, sglang; print('sglang', sglang.__version__, 'ready in $dir')" 2>&1 | tail -1
