"""The locally trained BPE tokenizer: LFM2's special tokens, determinism, offline round trip, fingerprint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import SPECIAL_TOKENS, tokenizer_fingerprint, train_bpe_tokenizer

REPO = Path(__file__).resolve().parents[1]
SFT = REPO / "datasets/quickstart/sft.jsonl"


def quickstart_texts() -> list[str]:
    """Message contents and tool specs, with the special tokens the tool calls contain."""
    records = [json.loads(line) for line in SFT.read_text(encoding="utf-8").splitlines()]
    texts = [message["content"] for record in records for message in record["messages"]]
    return texts + [json.dumps(record["tools"]) for record in records if "tools" in record]


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(quickstart_texts(), 2048, LFM2_CHAT_TEMPLATE)


def test_special_tokens_are_single_ids_and_never_split(tokenizer):
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
        ids = tokenizer.encode(f"x{token}y {token}", add_special_tokens=False)
        assert ids.count(expected_id) == 2, token
        assert tokenizer.decode(ids) == f"x{token}y {token}"


def test_pad_bos_eos_match_lfm2_config_defaults(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == SPECIAL_TOKENS[:3]


def test_training_learns_no_merges_from_special_tokens(tokenizer):
    assert not [token for token in tokenizer.get_vocab() if "tool_call" in token and token not in SPECIAL_TOKENS]


def test_plain_text_gets_bos_chat_gets_it_from_the_template(tokenizer):
    assert tokenizer("The red fox.").input_ids[0] == tokenizer.bos_token_id
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True, return_dict=True)
    assert chat["input_ids"].count(tokenizer.bos_token_id) == 1


def test_tool_markers_survive_skip_special_tokens(tokenizer):
    call = '<|tool_call_start|>[get_time(city="Oslo")]<|tool_call_end|>'
    ids = tokenizer.encode(call + "<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == call


TRAIN_IN_A_FRESH_PROCESS = """
import json, sys
from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import train_bpe_tokenizer
texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
train_bpe_tokenizer(texts, 1024, LFM2_CHAT_TEMPLATE).save_pretrained(sys.argv[2])
"""


def test_training_twice_gives_identical_files(tmp_path):
    """The second run is another process, so hash seeds differ: ties between merges must not depend on them."""
    texts = quickstart_texts()
    train_bpe_tokenizer(texts, 1024, LFM2_CHAT_TEMPLATE).save_pretrained(tmp_path / "a")
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    command = [sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, str(tmp_path / "texts.json"), str(tmp_path / "b")]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert tokenizer_fingerprint(tmp_path / "a") == tokenizer_fingerprint(tmp_path / "b")


def test_save_and_load_offline_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(loaded) == len(tokenizer)
    assert loaded.chat_template == LFM2_CHAT_TEMPLATE
    assert loaded.model_max_length == tokenizer.model_max_length == 2048
    for text in quickstart_texts()[:50]:
        assert loaded(text).input_ids == tokenizer(text).input_ids


def test_fingerprint_survives_a_reload_and_sees_the_chat_template(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "first")
    AutoTokenizer.from_pretrained(tmp_path / "first", local_files_only=True).save_pretrained(tmp_path / "again")
    assert tokenizer_fingerprint(tmp_path / "first") == tokenizer_fingerprint(tmp_path / "again")
    (tmp_path / "again" / "chat_template.jinja").write_text("{{ messages }}")
    assert tokenizer_fingerprint(tmp_path / "first") != tokenizer_fingerprint(tmp_path / "again")


def test_fingerprint_needs_a_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        tokenizer_fingerprint(tmp_path)


def test_vocab_size_must_leave_room_for_merges():
    with pytest.raises(ValueError, match="vocab_size 200"):
        train_bpe_tokenizer(["hello"], 200, LFM2_CHAT_TEMPLATE)
