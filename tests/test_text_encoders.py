"""Text encoders: tokenizers, the causal text transformer, the text tower file, the frozen sentence encoder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from pretrainlab.backbones.text import create_text_encoder
from pretrainlab.backbones.text.tokenizer import BOS, EOS, PAD, UNK, ByteTokenizer, WordTokenizer, tokenizer_from_dict
from pretrainlab.backbones.text.tower import TextTower, load_text_tower, save_text_tower
from pretrainlab.backbones.text.transformer import TextTransformer
from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError, UnknownNameError

CAPTIONS = ["a 3 above a 7, a 1 on the right", "two objects: a 3 and an 8", "a 3 at the top left"]


def test_word_tokenizer_is_built_from_captions_and_round_trips() -> None:
    tokenizer = WordTokenizer.build(CAPTIONS, max_length=12)
    assert tokenizer.vocabulary[4] == "a"  # the most frequent word gets the first id after the specials
    ids = tokenizer.encode(["a 3 above a zebra", CAPTIONS[0]])
    assert ids.shape == (2, 12) and ids[0, 0] == BOS and ids[0, 6] == EOS and ids[0, 7] == PAD
    assert ids[0, 5] == UNK and ids[1, -1] == EOS  # unseen word; a long caption is cut, EOS kept
    assert tokenizer.decode(tokenizer.encode(["a 3 above a 7, a 1"])[0]) == "a 3 above a 7, a 1"
    rebuilt = tokenizer_from_dict(tokenizer.to_dict())
    assert torch.equal(rebuilt.encode(CAPTIONS), tokenizer.encode(CAPTIONS))
    assert ByteTokenizer(16).decode(ByteTokenizer(16).encode(["ünï"])[0]) == "ünï"


def test_causal_transformer_ignores_later_tokens() -> None:
    model = TextTransformer(vocab_size=20, width=16, depth=2, heads=2, max_length=8).eval()
    ids = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0]])
    changed = ids.clone()
    changed[0, 3] = 9
    with torch.no_grad():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_text_tower_saves_and_loads(tmp_path: Path) -> None:
    encoder = create_text_encoder("transformer", CAPTIONS, {"width": 16, "depth": 1, "heads": 2, "max_length": 16})
    tower = TextTower(encoder, 8).eval()
    projection = torch.randn(8, 32)
    save_text_tower(tmp_path / "tower.safetensors", tower, {"image_projection.weight": projection}, {"method": "x"})
    loaded, extra, info = load_text_tower(tmp_path / "tower.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded(CAPTIONS), tower(CAPTIONS))
    torch.testing.assert_close(extra["image_projection.weight"], projection)
    assert info == {"method": "x"}


def test_unknown_text_encoder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UnknownNameError, match="transformer"):
        create_text_encoder("gpt5", CAPTIONS)
    code = main(["pretrain", "--method", "clip", "--option", "text_encoder=bert", "--data", "captions:builtin",
                 "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "minilm" in error
    with pytest.raises(PretrainlabError, match="captions"):
        create_text_encoder("transformer", [])


def test_sentence_encoder_loads_offline_and_stays_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sentence encoder must not open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = create_text_encoder("minilm", [])
    embeddings = encoder.encode(["a photo of a cat", "a picture of a cat", "a 3 above a 7"])
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # paraphrases are closer than unrelated text
    tower = TextTower(encoder, 8)
    assert set(tower.state_dict()) == {"projection.weight"}  # the frozen weights stay out of checkpoints
    assert "a photo of a cat" in encoder.cache


def test_clip_run_with_the_frozen_sentence_encoder_saves_a_loadable_tower(tmp_path: Path) -> None:
    from pretrainlab.data import load_source
    from pretrainlab.pipeline import build_run_config, untrained_run

    source = load_source("captions:composed:builtin:8")
    config = build_run_config("clip", {"backbone": "tinycnn", "data": source.spec, "img_size": 28,
                                       "out": str(tmp_path / "run")}, {"seed": 0},
                              {"text_encoder": "minilm", "embed_dim": 8})
    run = untrained_run(config, source)
    tower, extra, _ = load_text_tower(run / "text_tower.safetensors")
    assert not (run / "tokenizer.json").exists() and extra["image_projection.weight"].shape == (8, 128)
    with torch.no_grad():
        assert tower(["a 3 above a 7"]).shape == (1, 8)
