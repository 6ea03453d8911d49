"""Bad recipes and the exact errors each must give (`file:line: path: message`), for every stage kind.

Paths start at the stage's name (`sft.from`); a stage without a valid name keeps its index (`stages[1]`).
`{root}` stands for the project folder and `{kinds}` for the list of stage kinds.
"""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import RecipeError
from workbench.runner import default_catalog, load_recipe

HEADER = """\
name: demo
tokenizer:
  train:
    files: [data/chat.jsonl]
stages:
  - name: base
    kind: init
    architecture: arch.yaml
"""


def errors_of(project, text: str) -> list[str]:
    path = project / "r.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, root=project)
    return [str(p).replace(str(path), "r.yaml") for p in caught.value.problems]


def stage(*lines: str) -> str:
    """One stage entry: `stage("name: x", "kind: sft")`."""
    return f"  - {lines[0]}\n" + "".join(f"    {line}\n" for line in lines[1:])


SFT = stage("name: sft", "kind: sft", "from: base", "data: data/chat.jsonl")
CACHE = stage("name: tc", "kind: teacher_cache", "from: base", "corpus: data/corpus.jsonl")
EVAL_SFT = stage("name: eval_sft", "kind: evaluate", "from: sft", "suites: [tool_use]")
WIDE = stage("name: wide", "kind: init", "architecture: arch_wide.yaml")
SWEEP = "parameters: {weight: {sweep: [0.5, 1.0]}}"
LINEAR_MERGE = ("name: m", "kind: merge", "method: linear", "models: [base, base]")

CASES = {
    # -- the recipe file and its top-level fields ------------------------------------------------------------------
    "recipe: chat template file missing": (
        HEADER.replace("stages:", "chat_template: templates/chat.jinja\nstages:"),
        ["r.yaml:5: chat_template: file not found: 'templates/chat.jinja' (relative to {root})"],
    ),
    "recipe: unknown chat template name": (
        HEADER.replace("stages:", "chat_template: chatml\nstages:"),
        ["r.yaml:5: chat_template: unknown chat template 'chatml': a builtin (lfm2) or a .jinja file"],
    ),
    "recipe: tokenizer training file missing": (
        HEADER.replace("files: [data/chat.jsonl]", "files: [data/chat.jsonl, data/more.txt]"),
        ["r.yaml:4: tokenizer.train.files[1]: file not found: 'data/more.txt' (relative to {root})"],
    ),
    "recipe: tokenizer training file is a folder": (
        HEADER.replace("files: [data/chat.jsonl]", "files: [data]"),
        ["r.yaml:4: tokenizer.train.files[0]: 'data' is a folder; list the files in it that train the tokenizer"],
    ),
    "recipe: tokenizer both path and train": (
        HEADER.replace("tokenizer:\n", "tokenizer:\n  path: org/tok\n"),
        ["r.yaml:2: tokenizer: give exactly one of 'path' or 'train'"],
    ),
    "recipe: unknown top-level field": (
        "nam: x\n" + HEADER,
        ["r.yaml:1: unknown field 'nam' (did you mean 'name'?)"],
    ),
    "recipe: stage field at the top level": (
        HEADER + "learning_rate: 0.001\n",
        [
            "r.yaml:9: unknown field 'learning_rate'; stage kinds distill, preference, pretrain, sft take it: "
            "is it indented under a stage?"
        ],
    ),
    "recipe: no stages": (
        HEADER.split("  - name")[0].replace("stages:", "stages: []"),
        ["r.yaml:5: stages: needs at least 1 entry"],
    ),
    "recipe: not a mapping": (
        "- just\n- a list\n",
        ["r.yaml:1: a recipe must be a mapping with 'name', 'tokenizer' and 'stages'"],
    ),
    "recipe: empty file": (
        "",
        ["r.yaml:1: a recipe must be a mapping with 'name', 'tokenizer' and 'stages'"],
    ),
    "yaml: key indented deeper than its siblings": (
        HEADER + stage("name: sft", "kind: sft", "from: base") + "     data: data/chat.jsonl\n",
        [
            "r.yaml:12: invalid YAML: unexpected ':' (is this line indented deeper than the key above it? "
            "a value containing ': ' must be quoted)"
        ],
    ),
    "yaml: key not lined up with the stage's fields": (
        HEADER + stage("name: sft", "kind: sft", "from: base") + "  data: data/chat.jsonl\n",
        [
            "r.yaml:12: invalid YAML: this line is not lined up with the lines above it (keys of one mapping "
            "start in the same column: a stage's fields under its 'name', list items under their key)"
        ],
    ),
    "yaml: tab indentation": (
        HEADER + "  - name: sft\n\tkind: sft\n",
        ["r.yaml:10: invalid YAML: a tab character: YAML indents with spaces only"],
    ),
    "yaml: unclosed bracket": (
        HEADER + "  - name: [unclosed\n",
        [
            "r.yaml:9: invalid YAML: the '[' opened on this line is not closed "
            "(expected ',' or ']', but got '<stream end>')"
        ],
    ),
    "yaml: duplicate key": (
        HEADER + SFT + "    data: data/chat.jsonl\n",
        ["r.yaml:13: sft: duplicate key 'data' (first at line 12); YAML would keep only the last"],
    ),
    # -- the stage list --------------------------------------------------------------------------------------------
    "stages: unknown kind": (
        HEADER + stage("name: x", "kind: stf"),
        ["r.yaml:10: x.kind: unknown stage kind 'stf' (did you mean 'sft'?); known kinds: {kinds}"],
    ),
    "stages: missing kind": (
        HEADER + stage("name: x"),
        ["r.yaml:9: x: missing required field 'kind' (one of: {kinds})"],
    ),
    "stages: a stage using one of unknown kind is not reported twice": (
        HEADER
        + stage("name: sft", "kind: stf", "from: base")
        + stage("name: ev", "kind: evaluate", "from: sft", "suites: [json_schema]"),
        ["r.yaml:10: sft.kind: unknown stage kind 'stf' (did you mean 'sft'?); known kinds: {kinds}"],
    ),
    "stages: kind written as a list": (
        HEADER + stage("name: x", "kind: [sft]"),
        ["r.yaml:10: x.kind: 'kind' takes one stage kind: {kinds} (got ['sft'])"],
    ),
    "stages: duplicate name": (
        HEADER + stage("name: base", "kind: init", "architecture: arch.yaml"),
        ["r.yaml:9: stages[1].name: duplicate stage name 'base' (first defined at line 6)"],
    ),
    "stages: invalid name keeps the index": (
        HEADER.replace("name: base", "name: 'my stage'"),
        ["r.yaml:6: stages[0].name: String should match pattern '^[A-Za-z][A-Za-z0-9_\\-]*$' (got 'my stage')"],
    ),
    "stages: missing name keeps the index": (
        HEADER + "  - kind: sft\n    from: base\n    data: data/chat.jsonl\n",
        ["r.yaml:9: stages[1]: missing required field 'name'"],
    ),
    "stages: cycle": (
        HEADER
        + stage("name: a", "kind: sft", "from: b", "data: data/chat.jsonl")
        + stage("name: b", "kind: sft", "from: a", "data: data/chat.jsonl"),
        ["r.yaml:9: a.name: dependency cycle: a -> b -> a"],
    ),
    # -- init ------------------------------------------------------------------------------------------------------
    "init: architecture file missing": (
        HEADER.replace("arch.yaml", "pretrain/nothere.yaml"),
        ["r.yaml:8: base.architecture: file not found: 'pretrain/nothere.yaml' (relative to {root})"],
    ),
    "init: unknown field with a suggestion": (
        HEADER.replace("architecture:", "architcture:"),
        ["r.yaml:8: base: unknown field 'architcture' (did you mean 'architecture'?)"],
    ),
    "init: negative seed": (
        HEADER + "    seed: -1\n",
        ["r.yaml:9: base.seed: Input should be greater than or equal to 0 (got -1)"],
    ),
    # -- pretrain --------------------------------------------------------------------------------------------------
    "pretrain: seq_len too small": (
        HEADER + stage("name: pt", "kind: pretrain", "from: base", "corpus: data/corpus.jsonl", "seq_len: 4"),
        ["r.yaml:13: pt.seq_len: Input should be greater than or equal to 8 (got 4)"],
    ),
    "pretrain: curriculum scorer without a scorer": (
        HEADER + stage("name: pt", "kind: pretrain", "from: base", "corpus: data/corpus.jsonl", "curriculum: scorer"),
        ["r.yaml:13: pt.curriculum: 'scorer' is needed by, and only by, curriculum: scorer"],
    ),
    "pretrain: no starting point": (
        HEADER + stage("name: pt", "kind: pretrain", "corpus: data/corpus.jsonl"),
        ["r.yaml:9: pt: give exactly one of 'architecture', 'from' or 'model'"],
    ),
    "pretrain: corpus missing": (
        HEADER + stage("name: pt", "kind: pretrain", "from: base", "corpus: data/nothere.jsonl"),
        ["r.yaml:12: pt.corpus: file not found: 'data/nothere.jsonl' (relative to {root})"],
    ),
    # -- teacher_cache ---------------------------------------------------------------------------------------------
    "teacher_cache: k of 0": (
        HEADER + CACHE + "    k: 0\n",
        ["r.yaml:13: tc.k: Input should be greater than or equal to 1 (got 0)"],
    ),
    "teacher_cache: teacher folder missing": (
        HEADER + stage("name: tc", "kind: teacher_cache", "model: runs/teacher/model", "corpus: data/corpus.jsonl"),
        [
            "r.yaml:11: tc.model: model folder not found: 'runs/teacher/model' (relative to {root}; "
            "a hub id is written org/name)"
        ],
    ),
    # -- distill ---------------------------------------------------------------------------------------------------
    "distill: loss k of 0": (
        HEADER
        + CACHE
        + stage("name: d", "kind: distill", "from: base", "corpus: data/corpus.jsonl", "cache: tc", "loss: {k: 0}"),
        ["r.yaml:18: d.loss.k: Input should be greater than or equal to 1 (got 0)"],
    ),
    "distill: cache names a stage that is no teacher_cache": (
        HEADER + stage("name: d", "kind: distill", "from: base", "corpus: data/corpus.jsonl", "cache: base"),
        ["r.yaml:13: d.cache: 'base' is an init stage; this field takes a teacher_cache stage"],
    ),
    "distill: online teacher with a cache": (
        HEADER
        + CACHE
        + stage(
            "name: d",
            "kind: distill",
            "from: base",
            "corpus: data/corpus.jsonl",
            "teacher_mode: online",
            "teacher: base",
            "cache: tc",
        ),
        ["r.yaml:19: d: teacher_mode: online reads no cache; remove 'cache'/'cache_path'"],
    ),
    "distill: a loss field at the stage level": (
        HEADER
        + CACHE
        + stage("name: d", "kind: distill", "from: base", "corpus: data/corpus.jsonl", "cache: tc", "temperature: 2.0"),
        [
            "r.yaml:18: d: unknown field 'temperature'; 'loss' takes it: indent it under 'loss:'; "
            "kinds that take it: pairs"
        ],
    ),
    "distill: teacher_mode typo": (
        HEADER
        + CACHE
        + stage(
            "name: d", "kind: distill", "from: base", "corpus: data/corpus.jsonl", "cache: tc", "teacher_mode: cahced"
        ),
        ["r.yaml:18: d.teacher_mode: Input should be 'cached' or 'online' (got 'cahced') (did you mean 'cached'?)"],
    ),
    # -- sft -------------------------------------------------------------------------------------------------------
    "sft: unknown stage reference": (
        HEADER + stage("name: sft", "kind: sft", "from: bas", "data: data/chat.jsonl"),
        ["r.yaml:11: sft.from: unknown stage 'bas' (did you mean 'base'?)"],
    ),
    "sft: self reference": (
        HEADER + stage("name: sft", "kind: sft", "from: sft", "data: data/chat.jsonl"),
        ["r.yaml:11: sft.from: stage 'sft' cannot use its own output"],
    ),
    "sft: both from and model": (
        HEADER + SFT + "    model: org/model\n",
        ["r.yaml:9: sft: give exactly one of 'from' or 'model'"],
    ),
    "sft: the Python name of an aliased field": (
        HEADER + stage("name: sft", "kind: sft", "from_: base", "data: data/chat.jsonl"),
        ["r.yaml:11: sft: unknown field 'from_' (did you mean 'from'?)"],
    ),
    "sft: missing required field": (
        HEADER + stage("name: sft", "kind: sft", "from: base"),
        ["r.yaml:9: sft: missing required field 'data'"],
    ),
    "sft: data file missing": (
        HEADER + stage("name: sft", "kind: sft", "from: base", "data: data/missing.jsonl"),
        ["r.yaml:12: sft.data: file not found: 'data/missing.jsonl' (relative to {root})"],
    ),
    "sft: a URI scheme the field does not take": (
        HEADER + stage("name: sft", "kind: sft", "from: base", "data: s3://bucket/chat.jsonl"),
        [
            "r.yaml:12: sft.data: 's3://bucket/chat.jsonl': this field takes a file path, not a 's3://' URI "
            "(URIs allowed: none)"
        ],
    ),
    "sft: model folder missing": (
        HEADER + stage("name: sft", "kind: sft", "model: runs/nothere/model", "data: data/chat.jsonl"),
        [
            "r.yaml:11: sft.model: model folder not found: 'runs/nothere/model' (relative to {root}; "
            "a hub id is written org/name)"
        ],
    ),
    "sft: a field another kind takes": (
        HEADER + SFT + "    pairs_from: base\n",
        ["r.yaml:13: sft: unknown field 'pairs_from'; kinds that take it: preference"],
    ),
    "sft: unknown field with a suggestion": (
        HEADER + SFT + "    learning_rte: 0.1\n",
        ["r.yaml:13: sft: unknown field 'learning_rte' (did you mean 'learning_rate'?)"],
    ),
    "sft: wrong type": (
        HEADER + SFT + "    epochs: many\n",
        ["r.yaml:13: sft.epochs: Input should be a valid number, unable to parse string as a number (got 'many')"],
    ),
    "sft: learning_rate of 0": (
        HEADER + SFT + "    learning_rate: 0\n",
        ["r.yaml:13: sft.learning_rate: Input should be greater than 0 (got 0)"],
    ),
    "sft: batch_size of 0": (
        HEADER + SFT + "    batch_size: 0\n",
        ["r.yaml:13: sft.batch_size: Input should be greater than or equal to 1 (got 0)"],
    ),
    "sft: lora r of 0": (
        HEADER + SFT + "    lora: {r: 0}\n",
        ["r.yaml:13: sft.lora.r: Input should be greater than or equal to 1 (got 0)"],
    ),
    "sft: lora is a mapping": (
        HEADER + SFT + "    lora: 16\n",
        ["r.yaml:13: sft.lora: Input should be a mapping of fields ('key: value' lines) (got 16)"],
    ),
    "sft: a stage field inside lora": (
        HEADER + SFT + "    lora:\n      r: 8\n      learning_rate: 0.001\n",
        [
            "r.yaml:15: sft.lora: unknown field 'learning_rate'; it is a field of the stage itself, not of 'lora': "
            "indent it less"
        ],
    ),
    # -- evaluate --------------------------------------------------------------------------------------------------
    "evaluate: data file missing": (
        HEADER
        + stage(
            "name: ev",
            "kind: evaluate",
            "from: base",
            "suites: [json_schema]",
            "data: {json_schema: data/schemas.jsonl}",
        ),
        ["r.yaml:13: ev.data.json_schema: file not found: 'data/schemas.jsonl' (relative to {root})"],
    ),
    "evaluate: data names a suite not in suites": (
        HEADER
        + stage(
            "name: ev", "kind: evaluate", "from: base", "suites: [json_schema]", "data: {tool_use: data/chat.jsonl}"
        ),
        ["r.yaml:13: ev.data.tool_use: 'data' names suite 'tool_use', which 'suites' does not list"],
    ),
    "evaluate: unknown suite": (
        HEADER + stage("name: ev", "kind: evaluate", "from: base", "suites: [json_schma]"),
        [
            "r.yaml:12: ev.suites[0]: unknown suite 'json_schma' (did you mean 'json_schema'?); "
            "known: instruction_following, json_schema, tool_use"
        ],
    ),
    "evaluate: both from and model": (
        HEADER + stage("name: ev", "kind: evaluate", "from: base", "model: some/folder", "suites: [json_schema]"),
        [
            "r.yaml:9: ev: give exactly one of 'from' or 'model'",
            "r.yaml:12: ev.model: model folder not found: 'some/folder' (relative to {root}); this field takes a "
            "local folder, not a hub id",
        ],
    ),
    "evaluate: gate on a metric the suite does not report": (
        HEADER
        + stage(
            "name: ev", "kind: evaluate", "from: base", "suites: [tool_use]", "gates: ['tool_use/accuracy >= 0.5']"
        ),
        [
            "r.yaml:13: ev.gates[0]: suite 'tool_use' reports no metric 'tool_use/accuracy' (did you mean "
            "'tool_use/ast_accuracy'?); it reports: tool_use/ast_accuracy, tool_use/call_rate, tool_use/parse_rate, "
            "tool_use/simple_accuracy, tool_use/multiple_accuracy, tool_use/parallel_accuracy, "
            "tool_use/irrelevance_accuracy"
        ],
    ),
    "evaluate: gate on a suite the stage does not run": (
        HEADER
        + stage(
            "name: ev", "kind: evaluate", "from: base", "suites: [tool_use]", "gates: ['json_schema/valid_rate >= 0.5']"
        ),
        [
            "r.yaml:13: ev.gates[0]: gate 'json_schema/valid_rate >= 0.5' uses suite 'json_schema', which 'suites' "
            "does not list (suites: tool_use)"
        ],
    ),
    "evaluate: gate that does not parse points at its item": (
        HEADER
        + stage(
            "name: ev",
            "kind: evaluate",
            "from: base",
            "suites: [tool_use]",
            "gates:",
            "  - 'tool_use/ast_accuracy >= 0.5'",
            "  - 'tool_use/ast_accuracy => 0.5'",
        ),
        [
            "r.yaml:15: ev.gates[1]: cannot parse gate 'tool_use/ast_accuracy => 0.5': expected 'suite/metric OP "
            "NUMBER' or 'suite/metric OP STAGE [+|- NUMBER]' with OP one of >=, >, <=, <, =="
        ],
    ),
    "evaluate: typo in a gate's compared stage": (
        HEADER
        + SFT
        + EVAL_SFT
        + stage(
            "name: eval_again",
            "kind: evaluate",
            "from: sft",
            "suites: [tool_use]",
            "compare: [eval_sft]",
            "gates: ['tool_use/ast_accuracy >= eval_stf - 0.02']",
        ),
        [
            "r.yaml:22: eval_again.gates[0]: gate 'tool_use/ast_accuracy >= eval_stf - 0.02' compares with "
            "'eval_stf', which is not in 'compare' (did you mean 'eval_sft'?)"
        ],
    ),
    "evaluate: gate compares with a stage that does not run its suite": (
        HEADER
        + stage("name: eval_base", "kind: evaluate", "from: base", "suites: [json_schema]")
        + stage(
            "name: ev",
            "kind: evaluate",
            "from: base",
            "suites: [tool_use]",
            "compare: [eval_base]",
            "gates: ['tool_use/ast_accuracy >= eval_base']",
        ),
        [
            "r.yaml:18: ev.gates[0]: gate 'tool_use/ast_accuracy >= eval_base' compares with 'eval_base', which "
            "does not run suite 'tool_use' (it runs: json_schema); compare with an evaluate stage that does"
        ],
    ),
    "evaluate: gate compares with a stage that is no evaluate stage": (
        HEADER
        + SFT
        + stage(
            "name: ev", "kind: evaluate", "from: sft", "suites: [tool_use]", "gates: ['tool_use/ast_accuracy >= sft']"
        ),
        [
            "r.yaml:17: ev.gates[0]: gate 'tool_use/ast_accuracy >= sft' compares with 'sft', which is a sft stage; "
            "a gate compares with an evaluate stage listed in 'compare'"
        ],
    ),
    "evaluate: compare names a stage that is no evaluate stage": (
        HEADER + SFT + stage("name: ev", "kind: evaluate", "from: sft", "suites: [tool_use]", "compare: [sft]"),
        ["r.yaml:17: ev.compare[0]: 'sft' is a sft stage; this field takes an evaluate stage"],
    ),
    # -- pairs -----------------------------------------------------------------------------------------------------
    "pairs: temperature of 0": (
        HEADER + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "temperature: 0"),
        ["r.yaml:13: p.temperature: Input should be greater than 0 (got 0)"],
    ),
    "pairs: top_p above 1": (
        HEADER + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "top_p: 1.5"),
        ["r.yaml:13: p.top_p: Input should be less than or equal to 1 (got 1.5)"],
    ),
    "pairs: reward-model judge without a reward model": (
        HEADER + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "judge: reward_model"),
        ["r.yaml:13: p.judge: 'reward_model' (a model folder) is needed with judge: reward_model, and only then"],
    ),
    "pairs: an API key pasted where its variable's name belongs (the message never repeats it)": (
        HEADER
        + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "judge: llm")
        + "    llm_judge: {jury: [{base_url: 'http://h/v1', model: m, api_key_env: hf_pAsTeDkEy0123456789}]}\n",
        [
            "r.yaml:14: p.llm_judge.jury[0].api_key_env: must be the name of an environment variable (upper-case letters, "
            "digits, _), not the key itself"
        ],
    ),
    "pairs: a judge URL that carries a credential": (
        HEADER
        + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "judge: llm")
        + "    llm_judge: {jury: [{base_url: 'https://me:s3cret@h/v1?key=s3cret', model: m}]}\n",
        [
            "r.yaml:14: p.llm_judge.jury[0].base_url: must not hold a user, password or query string (keys go in api_key_env)"
        ],
    ),
    "pairs: a judge URL with a port out of range": (
        HEADER
        + stage("name: p", "kind: pairs", "from: base", "data: data/chat.jsonl", "judge: llm")
        + "    llm_judge: {jury: [{base_url: 'http://h:99999/v1', model: m}]}\n",
        ["r.yaml:14: p.llm_judge.jury[0].base_url: has a port outside 0-65535"],
    ),
    # -- preference ------------------------------------------------------------------------------------------------
    "preference: malformed argilla URI": (
        HEADER + stage("name: pref", "kind: preference", "from: base", "data: argilla://only-workspace"),
        ["r.yaml:12: pref.data: 'argilla://only-workspace': expected argilla://WORKSPACE/DATASET"],
    ),
    "preference: beta of 0": (
        HEADER + stage("name: pref", "kind: preference", "from: base", "data: data/chat.jsonl", "beta: 0"),
        ["r.yaml:13: pref.beta: Input should be greater than 0 (got 0)"],
    ),
    "preference: pairs_from names a stage that is no pairs stage": (
        HEADER + stage("name: pref", "kind: preference", "from: base", "pairs_from: base"),
        ["r.yaml:12: pref.pairs_from: 'base' is an init stage; this field takes a pairs stage"],
    ),
    "preference: preset typo": (
        HEADER + stage("name: pref", "kind: preference", "from: base", "data: data/chat.jsonl", "preset: dop"),
        [
            "r.yaml:13: pref.preset: Input should be 'dpo', 'ln_dpo', 'simpo', 'apo_zero' or 'lfm2' (got 'dop') "
            "(did you mean 'dpo'?)"
        ],
    ),
    # -- export ----------------------------------------------------------------------------------------------------
    "export: quantization typo": (
        HEADER + stage("name: device", "kind: export", "from: base", "quantization: q4_k_m"),
        [
            "r.yaml:12: device.quantization: Input should be 'f32', 'f16', 'bf16', 'q8_0', 'q6_K', 'q5_K_M', "
            "'q5_K_S', 'q5_0', 'q5_1', 'q4_K_M', 'q4_K_S', 'q4_0', 'q4_1', 'q3_K_L', 'q3_K_M', 'q3_K_S' or 'q2_K' "
            "(got 'q4_k_m') (did you mean 'q4_K_M'?)"
        ],
    ),
    "export: a stage is not a model": (
        HEADER
        + stage("name: ev", "kind: evaluate", "from: base", "suites: [tool_use]")
        + stage("name: device", "kind: export", "from: ev"),
        [
            "r.yaml:15: device.from: 'ev' is an evaluate stage, which makes no model; this field takes a stage "
            "with a model (distill, init, merge, preference, pretrain, sft)"
        ],
    ),
    "export: deploy needs an export stage": (
        HEADER + stage("name: ev", "kind: evaluate", "from: base", "deploy: {threads: 2}"),
        [
            "r.yaml:12: ev.deploy: deploy metrics measure a GGUF file through llama.cpp, and 'base' is an init "
            "stage: evaluate an export stage (kind: export, from: base)"
        ],
    ),
    # -- merge -----------------------------------------------------------------------------------------------------
    "merge: unknown template": (
        HEADER + stage("name: m", "kind: merge", "template: tie", "base: base", "models: [base, base]"),
        [
            "r.yaml:11: m.template: unknown merge template 'tie' (did you mean 'ties'?); known: dare-ties, della, "
            "slerp, soup, task-arithmetic, ties"
        ],  # the shipped templates are known from any project
    ),
    "tokenizer that is not a mapping, beside a teacher cache": (
        HEADER.replace("tokenizer:\n  train:\n    files: [data/chat.jsonl]\n", "tokenizer: org/tok\n") + CACHE,
        ["r.yaml:2: tokenizer: Input should be a mapping of fields ('key: value' lines) (got 'org/tok')"],
    ),
    "merge: candidates_of written as a list entry": (
        HEADER + stage("name: m", "kind: merge", "method: linear", "models: [{candidates_of: base}]"),
        [
            "r.yaml:12: m.models[0]: unknown field 'candidates_of'; 'candidates_of' goes directly under 'models:' "
            "(models: {candidates_of: ...}), not in a list entry"
        ],
    ),
    "merge: template written with .yaml": (
        HEADER + stage("name: m", "kind: merge", "template: ties.yaml", "base: base", "models: [base, base]"),
        ["r.yaml:11: m.template: write the merge template name without its extension: 'ties'"],
    ),
    "merge: parameter typo": (
        HEADER
        + stage(
            "name: m",
            "kind: merge",
            "method: ties",
            "base: base",
            "models: [base, base]",
            "parameters:",
            "  densty: 0.7",
        ),
        [
            "r.yaml:15: m.parameters: ties takes no parameter 'densty' (did you mean 'density'?) (it takes: density, int8_mask, lambda, "
            "normalize, rescale, weight)"
        ],
    ),
    "merge: models built from different architectures": (
        HEADER + WIDE + stage("name: m", "kind: merge", "method: linear", "models: [base, wide]"),
        [
            "r.yaml:15: m.models: cannot merge 'base' (arch.yaml) with 'wide' (arch_wide.yaml): different "
            "architectures (hidden_size 64 vs 128)"
        ],
    ),
    "merge: unknown stage inside a mapping": (
        HEADER + stage("name: m", "kind: merge", "method: linear", "models: [base, {from: bsae}]"),
        ["r.yaml:12: m.models[1].from: unknown stage 'bsae' (did you mean 'base'?)"],
    ),
    "merge: select compares with a stage that is no evaluate stage": (
        HEADER
        + stage(
            *LINEAR_MERGE,
            SWEEP,
            "select: {metric: json_schema/valid_rate, suite: json_schema, mode: max, compare: [base]}",
        ),
        ["r.yaml:14: m.select.compare[0]: 'base' is an init stage; this field takes an evaluate stage"],
    ),
    "merge: a swept value listed twice": (
        HEADER
        + stage(
            *LINEAR_MERGE,
            SWEEP.replace("[0.5, 1.0]", "[0.5, 0.5]"),
            "select: {metric: json_schema/valid_rate, suite: json_schema, mode: max}",
        ),
        ["r.yaml:9: m: parameters.weight.sweep[1]: 0.5 is listed twice"],
    ),
    "merge: base of the wrong type": (
        HEADER + stage("name: m", "kind: merge", "method: linear", "base: 5", "models: [base, base]"),
        ["r.yaml:12: m.base: Input should be a string or a mapping (got 5)"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_gives_exact_errors(project, case):
    text, expected = CASES[case]
    kinds = ", ".join(sorted(default_catalog().kinds))
    assert errors_of(project, text) == [e.replace("{root}", str(project)).replace("{kinds}", kinds) for e in expected]


def test_the_table_covers_every_stage_kind():
    covered = {case.split(":")[0] for case in CASES}
    assert set(default_catalog().kinds) <= covered
    for kind in default_catalog().kinds:
        assert sum(case.startswith(f"{kind}:") for case in CASES) >= 2, kind
    assert len(CASES) >= 36


def test_a_hub_id_is_a_model_source(project):
    path = project / "r.yaml"
    path.write_text(HEADER + stage("name: sft", "kind: sft", "model: org/name", "data: data/chat.jsonl"))
    assert load_recipe(path, root=project).stages["sft"].model == "org/name"


def test_every_problem_is_reported_at_once(project):
    text = HEADER + stage("name: sft", "kind: sft", "from: bsae", "data: nope.jsonl", "epochs: -1")
    found = errors_of(project, text)
    assert [e.split(": ", 2)[1] for e in found] == ["sft.from", "sft.data", "sft.epochs"]
    assert [int(e.split(":")[1]) for e in found] == [11, 12, 13]


def test_valid_recipe_orders_stages_by_dependency(project):
    head, base_stage = HEADER.split("stages:\n")
    path = project / "r.yaml"
    path.write_text(head + "stages:\n" + SFT + base_stage)  # sft is written before the stage it uses
    loaded = load_recipe(path, root=project)
    assert loaded.order == ["base", "sft"]
    assert loaded.stages["sft"].from_ == "base"


def test_cli_validate_prints_errors_without_traceback(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "r.yaml").write_text(HEADER + stage("name: x", "kind: stf") + SFT.replace("from: base", "from: bsae"))
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: r.yaml:10: x.kind: unknown stage kind 'stf' (did you mean 'sft'?); known kinds: "
        + ", ".join(sorted(default_catalog().kinds)),
        "error: r.yaml:13: sft.from: unknown stage 'bsae' (did you mean 'base'?)",
    ]
    assert "Traceback" not in result.output


def test_cli_validate_ok(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "r.yaml").write_text(HEADER + SFT)
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0, result.output
    assert "OK: r.yaml (2 stages: base -> sft)" in result.output


def test_schema_lists_every_stage_kind():
    from workbench.recipe.json_schema import recipe_json_schema

    schema = recipe_json_schema(default_catalog())
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == set(default_catalog().kinds)
    assert schema["$defs"]["SFTStageConfig"]["properties"]["learning_rate"]["description"] == "Peak learning rate."
    assert "from" in schema["$defs"]["SFTStageConfig"]["properties"]
    # fields that name a suite, a judge or a merge template list the names known here, for an editor's completion
    definitions = schema["$defs"]
    assert definitions["EvaluateStageConfig"]["properties"]["suites"]["items"]["examples"] == [
        "instruction_following", "json_schema", "tool_use"]  # fmt: skip
    assert definitions["PairsStageConfig"]["properties"]["judge"]["examples"] == ["llm", "reward_model", "verifier"]
    assert "ties" in definitions["MergeStageConfig"]["properties"]["template"]["examples"]


def test_a_model_folder_must_look_loadable(project):
    (project / "notamodel").mkdir()
    (project / "weights.bin").write_text("x")
    text = HEADER + stage("name: sft", "kind: sft", "model: notamodel", "data: data/chat.jsonl")
    text += stage("name: sft2", "kind: sft", "model: weights.bin", "data: data/chat.jsonl")
    assert errors_of(project, text) == [
        "r.yaml:11: sft.model: 'notamodel' is not a model folder: it holds no config.json",
        "r.yaml:15: sft2.model: 'weights.bin' is a file; a model folder is expected here",
    ]


def test_records_may_be_a_saved_dataset_folder_but_not_any_folder(project):
    import datasets

    datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}]).save_to_disk(project / "saved")
    (project / "empty").mkdir()
    ok = HEADER + stage("name: sft", "kind: sft", "from: base", "data: saved")
    (project / "ok.yaml").write_text(ok)
    assert load_recipe(project / "ok.yaml", root=project).stages["sft"].data == "saved"
    text = HEADER + stage("name: sft", "kind: sft", "from: base", "data: empty")
    assert errors_of(project, text) == [
        "r.yaml:12: sft.data: 'empty' is a folder but not a saved dataset (no dataset_info.json or dataset_dict.json "
        "in it)"
    ]
