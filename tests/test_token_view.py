"""The UI's token view works for any model: each generation names its tokenizer, the store
keeps it, and the viewer decodes with it. The tokenizer here is a real `tokenizers` file
built in the test (a model nobody ships), served through the real app over a real store."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from tokenizers import Tokenizer, models, pre_tokenizers

from agentplay.traces import Episode, Generation, RewardRecord, RoleTurn, TraceStore
from agentplay.ui import create_app

VOCAB = {"[UNK]": 0, "the": 1, "answer": 2, "is": 3, "<tool>": 4, "42": 5}


def _tokenizer_folder(tmp_path: Path) -> Path:
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "my-model"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _turn(tokenizer: str | None) -> RoleTurn:
    return RoleTurn(role="solver", token_ids=[1, 2, 4, 3, 5], mask=[1, 1, 0, 1, 1], prompt_token_ids=[1],
                    generations=[Generation(text="the answer", model="openai:my-served-policy", tokenizer=tokenizer),
                                 Generation(text="is 42", model="openai:my-served-policy", tokenizer=tokenizer)],
                    messages=[{"role": "assistant", "content": "the answer is 42"}], reward=RewardRecord(value=1.0))


def test_any_models_tokens_are_decoded_with_the_tokenizer_the_trace_names(tmp_path: Path):
    folder = _tokenizer_folder(tmp_path)
    path = tmp_path / "t.db"
    with TraceStore(path) as store:
        run_id = store.create_run("custom", {"model": "openai:my-served-policy"}, run_id="r")
        store.append_episode(Episode(run_id=run_id, index=0, recipe="custom", turns=[_turn(str(folder))]))
        store.append_episode(Episode(run_id=run_id, index=1, recipe="custom", turns=[_turn(None)]))
        stored = list(store.episodes(run_id, by_index=True))
    assert [g.tokenizer for g in stored[0].turns[0].generations] == [str(folder)] * 2  # the column round-trips
    client = TestClient(create_app(path))
    named, unnamed = (client.get(f"/api/episodes/{ep.episode_id}").json()["turns"][0] for ep in stored)
    assert named["pieces"] == [[1, "the"], [1, "answer"], [0, "<tool>"], [1, "is"], [1, "42"]]
    assert unnamed["pieces"] is None  # no tokenizer named, not the default model: the strip only
    assert unnamed["tokens"]["model"] == 4


def test_a_tokenizer_missing_from_this_machine_gives_the_strip_only(tmp_path: Path):
    path = tmp_path / "t.db"
    with TraceStore(path) as store:
        run_id = store.create_run("custom", run_id="r")
        store.append_episode(Episode(run_id=run_id, index=0, recipe="custom",
                                     turns=[_turn(str(tmp_path / "gone"))]))
        (ep,) = store.episodes(run_id)
    turn = TestClient(create_app(path)).get(f"/api/episodes/{ep.episode_id}").json()["turns"][0]
    assert turn["pieces"] is None and turn["tokens"]["model"] == 4
