import pytest

from fabric import keys

CID = "O:SPY:2025-12-19:650:C"


def test_every_key_of_an_underlying_carries_its_hash_tag() -> None:
    built = [
        keys.active_epoch("spy"),
        keys.live_epochs("SPY"),
        keys.epoch_meta("SPY", "e1"),
        keys.epoch_universe("SPY", "e1"),
        keys.epoch_ready("SPY", "e1"),
        keys.contract("SPY", "e1", "heatmap", CID),
        keys.contract("SPY", "e1", "gex", CID),
        keys.dirty_contracts("SPY", "e1"),
        keys.heatmap_tiles("SPY", "e1"),
        keys.spot("SPY"),
        keys.chain_cadence("SPY"),
        keys.chain_errors("SPY"),
        keys.chain_lock("SPY"),
        keys.chain_held("SPY"),
        keys.model_view("gex", "SPY"),
        keys.model_errors("gex", "SPY"),
        *keys.epoch_keys("SPY", "e1", [CID]),
    ]
    for key in built:
        assert key.count("{") == 1 and "{SPY}" in key, key


def test_schema_matches_the_design_table() -> None:
    assert keys.active_epoch("SPY") == "massive:epoch:active:{SPY}"
    assert keys.epoch_meta("SPY", "abc") == "massive:epoch:{SPY}:abc:meta"
    assert keys.contract("SPX", "abc", "heatmap", CID) == f"epoch:{{SPX}}:abc:heatmap:contract:{CID}"
    assert keys.model_index("SPY", "abc", "heatmap", "plane") == "epoch:{SPY}:abc:heatmap:plane"
    assert keys.dirty_contracts("SPY", "abc") == "epoch:{SPY}:abc:heatmap:dirty_contracts"
    assert keys.spot("SPX") == "massive:spot:{SPX}"
    assert keys.chain_cadence("SPY") == "massive:chain:cadence:{SPY}"
    assert keys.model_view("heatmap", "SPY") == "mmaker:heatmap:model:{SPY}"
    assert keys.chain_held("SPY") == "massive:chain:held:{SPY}"
    assert keys.model_errors("gex", "SPX") == "mmaker:gex:errors:{SPX}"


def test_unknown_index_is_refused() -> None:
    with pytest.raises(ValueError):
        keys.model_index("SPY", "e", "gex", "plane")


def test_epoch_keys_cover_both_models_for_every_contract() -> None:
    cids = [CID, "O:SPY:2025-12-19:650:P"]
    all_keys = keys.epoch_keys("SPY", "e1", cids)
    assert len(all_keys) == len(set(all_keys))
    for cid in cids:
        assert keys.contract("SPY", "e1", "heatmap", cid) in all_keys
        assert keys.contract("SPY", "e1", "gex", cid) in all_keys
    assert keys.epoch_meta("SPY", "e1") in all_keys
    assert keys.dirty_contracts("SPY", "e1") in all_keys
