import os

import pytest

from agent_rl.config.load import ConfigError, compose
from tools.kg_store import save_kg_store
from agent_rl.orchestration import prepare
from agent_rl.tasks.kg import server as kg_server


def _cfg(**over):
    args = [f"{k}={v}" for k, v in over.items()]
    return compose(args, check_paths=False)


def test_tool_names():
    assert prepare.tool_names("configs/tool_config/kg_query_tool_config.yaml") == ["kg_query"]
    assert set(prepare.tool_names("configs/tool_config/arith_tool_config.yaml")) == {"calculator", "calc_gsm8k_reward"}
    assert prepare.tool_names(None) == []


def test_kg_server_autostart_and_reuse(tmp_path, monkeypatch):
    monkeypatch.delenv(kg_server.KG_ENV, raising=False)
    store = tmp_path / "kg_store.json"
    save_kg_store(str(store), {"s1": [["A", "r.x", "B"]]}, "t")
    cfg = _cfg(**{"tools.kg_store": str(store), "tools.kg_server_url": "http://127.0.0.1:0"})
    handle = kg_server.start_services(cfg, log=lambda s: None)
    try:
        assert handle is not None
        url = os.environ[kg_server.KG_ENV]
        assert url == handle.url and kg_server.server_answers(url)
        # something answers at the configured URL now: reused, nothing started
        cfg2 = _cfg(**{"tools.kg_store": str(store), "tools.kg_server_url": url})
        assert kg_server.start_services(cfg2, log=lambda s: None) is None
    finally:
        handle.stop()
    assert not kg_server.server_answers(url)


def test_kg_server_of_another_store_is_not_reused(tmp_path, monkeypatch):
    """Another run's server holds the configured URL: ours starts on a free port, with our store; same store: reused."""
    from tools.kg_server import start_kg_server_thread, store_digest

    monkeypatch.delenv(kg_server.KG_ENV, raising=False)
    mine, theirs = tmp_path / "mine.json", tmp_path / "theirs.json"
    save_kg_store(str(mine), {"s1": [["A", "r.x", "B"]]}, "t")
    save_kg_store(str(theirs), {"s1": [["C", "r.y", "D"]]}, "t")
    other = start_kg_server_thread(str(theirs), "127.0.0.1", 0)
    handle = None
    try:
        assert kg_server.served_store_digest(other.url) == store_digest(str(theirs))
        msgs = []
        cfg = _cfg(**{"tools.kg_store": str(mine), "tools.kg_server_url": other.url})
        handle = kg_server.start_services(cfg, log=msgs.append)
        assert handle is not None and handle.url != other.url
        assert os.environ[kg_server.KG_ENV] == handle.url == cfg.tools.kg_server_url
        assert kg_server.served_store_digest(handle.url) == store_digest(str(mine))
        assert "serves another store" in msgs[0] and "free port" in msgs[0]
        # the same store: reused as is
        msgs.clear()
        cfg2 = _cfg(**{"tools.kg_store": str(theirs), "tools.kg_server_url": other.url})
        assert kg_server.start_services(cfg2, log=msgs.append) is None
        assert os.environ[kg_server.KG_ENV] == other.url == cfg2.tools.kg_server_url and "using" in msgs[0]
        # a mismatch without autostart is an error, not a silent reuse
        cfg3 = _cfg(**{"tools.kg_store": str(mine), "tools.kg_server_url": other.url,
                       "tools.kg_server_autostart": "false"})
        with pytest.raises(ConfigError, match="serves another store"):
            kg_server.start_services(cfg3, log=lambda s: None)
        # a server_url pinned in the tool YAML is what kg_query calls: checked, and never silently used
        import yaml

        with open("configs/tool_config/kg_query_tool_config.yaml", encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        doc["tools"][0].setdefault("config", {})["server_url"] = other.url
        pinned = tmp_path / "pinned.yaml"
        pinned.write_text(yaml.safe_dump(doc))
        cfg5 = _cfg(**{"tools.config_path": str(pinned), "tools.kg_store": str(mine),
                       "tools.kg_server_url": "http://127.0.0.1:9"})
        with pytest.raises(ConfigError, match="pinned"):
            kg_server.start_services(cfg5, log=lambda s: None)
        cfg5.tools.kg_store = str(theirs)
        assert kg_server.start_services(cfg5, log=lambda s: None) is None and cfg5.tools.kg_server_url == other.url
        # no store configured (a user-managed server): used unchecked, as before
        cfg4 = _cfg(**{"tools.kg_store": "null", "tools.kg_server_url": other.url})
        assert kg_server.start_services(cfg4, log=lambda s: None) is None and os.environ[kg_server.KG_ENV] == other.url
    finally:
        other.stop()
        if handle is not None:
            handle.stop()


def test_kg_server_without_digest_is_not_reused(tmp_path, monkeypatch):
    """A server that reports no store digest (an older KG server, or something else on the port)."""
    from tools.kg_server import load_index, start_kg_server_thread

    monkeypatch.delenv(kg_server.KG_ENV, raising=False)
    store = tmp_path / "kg_store.json"
    save_kg_store(str(store), {"s1": [["A", "r.x", "B"]]}, "t")
    old = start_kg_server_thread(load_index(str(store)), "127.0.0.1", 0)   # a KGIndex: no digest on /health
    handle = None
    try:
        assert kg_server.served_store_digest(old.url) is None
        msgs = []
        cfg = _cfg(**{"tools.kg_store": str(store), "tools.kg_server_url": old.url})
        handle = kg_server.start_services(cfg, log=msgs.append)
        assert handle is not None and handle.url != old.url and cfg.tools.kg_server_url == handle.url
        assert "does not report the store" in msgs[0]
    finally:
        old.stop()
        if handle is not None:
            handle.stop()


def test_kg_server_not_needed_without_kg_tool():
    cfg = _cfg(**{"tools.config_path": "configs/tool_config/calculator_tool_config.yaml"})
    assert kg_server.start_services(cfg) is None


def test_kg_server_missing_store_and_no_autostart(tmp_path):
    cfg = _cfg(**{"tools.kg_store": str(tmp_path / "none.json"), "tools.kg_server_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="tools.kg_store"):
        kg_server.start_services(cfg, log=lambda s: None)
    cfg = _cfg(**{"tools.kg_server_autostart": "false", "tools.kg_server_url": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="kg_server_autostart"):
        kg_server.start_services(cfg, log=lambda s: None)


def test_missing_data_without_generation(tmp_path):
    cfg = _cfg(**{"data.train_files": f"[{tmp_path}/x.parquet]", "data.generate_if_missing": "null"})
    with pytest.raises(ConfigError, match="x.parquet"):
        prepare.prepare_data(cfg)


def test_model_path_missing():
    cfg = _cfg(**{"model.path": "/nonexistent/model"})
    with pytest.raises(ConfigError, match="model.path"):
        prepare.prepare_model(cfg)


def test_generate_if_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # generation writes only the default folder data/kg (of the working directory)
    d = tmp_path / "data" / "kg"
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


def _sparql_yaml(tmp_path, fallback=None):
    import yaml

    doc = yaml.safe_load(open("configs/tool_config/kg_query_sparql_tool_config.yaml"))
    if fallback:
        doc["tools"][0]["config"]["fallback_url"] = fallback
    path = tmp_path / "sparql.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_sparql_backend_starts_no_subgraph_server_without_a_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv(kg_server.KG_ENV, raising=False)
    logs = []
    cfg = _cfg(**{"tools.config_path": _sparql_yaml(tmp_path), "tools.kg_store": str(tmp_path / "none.json"),
                  "tools.kg_server_url": "http://127.0.0.1:9"})
    assert kg_server.start_services(cfg, log=logs.append) is None      # no store needed, nothing started
    assert "not started" in logs[0] and "http://127.0.0.1:7878/query" in logs[0]
    assert kg_server.KG_ENV not in os.environ


def test_sparql_fallback_url_is_where_the_subgraph_server_starts(tmp_path, monkeypatch):
    import socket

    monkeypatch.delenv(kg_server.KG_ENV, raising=False)
    store = tmp_path / "kg_store.json"
    save_kg_store(str(store), {"s1": [["A", "r.x", "B"]]}, "t")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fallback = f"http://127.0.0.1:{port}"
    cfg = _cfg(**{"tools.config_path": _sparql_yaml(tmp_path, fallback), "tools.kg_store": str(store),
                  "tools.kg_server_url": "http://127.0.0.1:9"})
    handle = kg_server.start_services(cfg, log=lambda s: None)
    try:
        assert handle is not None and handle.url == fallback and kg_server.server_answers(fallback)
    finally:
        handle.stop()
