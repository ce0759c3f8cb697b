"""The trainer config ships twice: configs/trainer.yaml (source tree, editable installs) and a packaged copy
agent_rl/config/trainer.yaml (non-editable installs). They must not drift."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_packaged_trainer_yaml_equals_the_source_one():
    with open(os.path.join(ROOT, "configs", "trainer.yaml")) as a, \
            open(os.path.join(ROOT, "agent_rl", "config", "trainer.yaml")) as b:
        assert a.read() == b.read(), "edit configs/trainer.yaml and copy it to agent_rl/config/trainer.yaml"
