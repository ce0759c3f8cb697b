"""Subprocess for test_checkpoint: resume from the latest checkpoint, then save forever (until killed).

Saves are slowed down (a sleep inside each file write) so that a kill at a random moment lands inside
a save most of the time. Prints `saved <step>` after each save."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_batch, make_cfgs  # noqa: E402

from agent_rl.training import checkpoint as C  # noqa: E402
from agent_rl.training.actor import Actor  # noqa: E402


def main(root, model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model, actor_cfg, algo, _ = make_cfgs(model_path)
    actor = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    step = 0
    latest = C.find_latest_checkpoint(root)
    if latest:
        step = C.load_checkpoint(latest, actor)["step"]
    actor.update(make_batch(B=2, L=10))
    real_save = C._torch_save

    def slow_save(obj, path):
        time.sleep(0.05)
        real_save(obj, path)
        time.sleep(0.05)

    C._torch_save = slow_save
    while True:
        step += 1
        C.save_checkpoint(root, step, actor, tok, {"step": step, "data_pos": step * 10}, max_to_keep=2)
        print(f"saved {step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
