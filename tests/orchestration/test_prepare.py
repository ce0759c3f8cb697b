import os

import pytest

from agent_rl.config.load import ConfigError, compose
from agent_rl.data.kg_store import save_kg_store
from agent_rl.orchestration import prepare


def _cfg(**over):
    args = [f"{k}={v}" for k, v in over.items()]
    return compose(args, check_paths=False)


def test_tool_names():
    assert prepare.tool_names("configs/tool_config/kg_query_tool_config.yaml") == ["kg_query"]
    assert set(prepare.tool_names("configs/tool_config/arith_tool_config.yaml")) == {"calculator", "calc_gsm8k_reward"}
    assert prepare.tool_names(None) == []


def test_kg_server_autostart_and_reuse(tmp_path, monkeypatch):
    monkeypatch.delenv(prepare.KG_ENV, raising=False)
    store = tmp_path / "kg_store.json"
    save_kg_store(str(store), {"s1": [["A", "r.x", "B"]]}, "t")
    cfg = _cfg(**{"tools.kg_store": str(store), "tools.kg_server_url": "http://127.0.0.1:0"})
    handle = prepare.ensure_kg_server(cfg, log=lambda s: None)
    try:
        assert handle is not None
        url = os.environ[prepare.KG_ENV]
        assert url == handle.url and prepare.server_answers(url)
        # something answers at the configured URL now: reused, nothing started
        cfg2 = _cfg(**{"tools.kg_store": str(store), "tools.kg_server_url": url})
        assert prepare.ensure_kg_server(cfg2, log=lambda s: None) is None
    finally:
        handle.stop()
    assert not prepare.server_answers(url)


def test_kg_server_not_needed_without_kg_tool():
    cfg = _cfg(**{"tools.config_path": "configs/tool_config/calculator_tool_config.yaml"})
    assert prepare.ensure_kg_server(cfg) is None


def test_kg_server_missing_store_and_no_autostart(tmp_path):
    cfg = _cfg(**{"tools.kg_store": str(tmp_path / "none.json"), "tools.kg_server_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="tools.kg_store"):
        prepare.ensure_kg_server(cfg, log=lambda s: None)
    cfg = _cfg(**{"tools.kg_server_autostart": "false", "tools.kg_server_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="kg_server_autostart"):
        prepare.ensure_kg_server(cfg, log=lambda s: None)


def test_missing_data_without_generation(tmp_path):
    cfg = _cfg(**{"data.train_files": f"[{tmp_path}/x.parquet]", "data.generate_if_missing": "null"})
    with pytest.raises(ConfigError, match="x.parquet"):
        prepare.prepare_data(cfg)


def test_model_path_missing():
    cfg = _cfg(**{"model.path": "/nonexistent/model"})
    with pytest.raises(ConfigError, match="model.path"):
        prepare.prepare_model(cfg)


def test_generate_if_missing(tmp_path):
    d = tmp_path / "kg"
    cfg = _cfg(**{"data.train_files": f"[{d}/train.parquet]", "data.val_files": f"[{d}/val.parquet]",
                  "tools.kg_store": f"{d}/kg_store.json", "data.generate_if_missing": "kg"})
    msgs = []
    prepare.prepare_data(cfg, log=msgs.append)
    assert (d / "train.parquet").exists() and (d / "val.parquet").exists() and (d / "kg_store.json").exists()
    assert msgs and "kg" in msgs[0]
    msgs.clear()
    prepare.prepare_data(cfg, log=msgs.append)     # present: nothing to do
    assert msgs == []
    bad = _cfg(**{"data.train_files": f"[{d}/other.parquet]", "data.generate_if_missing": "kg"})
    with pytest.raises(ConfigError, match="other.parquet"):
        prepare.prepare_data(bad, log=lambda s: None)
