"""SFT packing on LFM2: the padding-free strategies need causal_conv1d for the conv layers (one line before any
data is read when it is missing); `wrapped` trains anywhere."""

from __future__ import annotations

import importlib.util
import json

import pytest

from workbench.errors import StageError
from workbench.runner import load_recipe
from workbench.runner.executor import run_recipe


@pytest.mark.skipif(importlib.util.find_spec("causal_conv1d") is not None, reason="causal_conv1d keeps packs apart")
def test_padding_free_packing_without_causal_conv1d_is_one_line_before_the_data_is_read(tiny_project):
    path = tiny_project({"max_steps": 2, "packing": True})
    with pytest.raises(StageError, match=r"packing_strategy bfd: LFM2's conv layers keep padding-free packed "
                                         r"conversations apart only with the causal_conv1d package"):  # fmt: skip
        run_recipe(load_recipe(path), only={"base", "sft"})


def test_wrapped_packing_trains_lfm2_on_any_machine(tiny_project):
    path = tiny_project({"max_steps": 2, "packing": True, "packing_strategy": "wrapped"})
    outcomes = {o.name: o for o in run_recipe(load_recipe(path), only={"base", "sft"})}
    info = json.loads((outcomes["sft"].dir / "stage.json").read_text())
    assert info["metrics"]["train/loss"] > 0
