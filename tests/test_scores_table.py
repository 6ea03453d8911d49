"""The end-of-run score table: every metric name readable whole, on a wide terminal and on an 80-column one."""

from types import SimpleNamespace

from rich.console import Console

from workbench.evaluation.report import scores_table

METRICS = {
    "instruction_following/prompt_strict_acc": 0.5385,
    "instruction_following/inst_strict_acc": 0.5513,
    "json_schema/valid_rate": 0.8,
    "deploy/prompt_tokens_per_s": 21591.3427,
    "eval/samples_per_s": 3.0,  # throughput, not a score: left out
}
STAGES = {name: SimpleNamespace(from_=model) for name, model in
          [("eval_base", "base"), ("eval_sft", "sft"), ("eval_final", "merged"), ("eval_device", "device")]}  # fmt: skip


def _render(width: int) -> list[str]:
    table = scores_table(SimpleNamespace(stages=STAGES), dict.fromkeys(STAGES, METRICS), width=width)
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_a_wide_terminal_gets_one_full_suite_metric_name_per_row():
    lines = _render(140)
    row = next(line for line in lines if "instruction_following/prompt_strict_acc" in line)
    assert row.replace("│", " ").split()[1:] == ["0.5385"] * 4
    assert any("21591.3" in line for line in lines) and not any("eval/" in line for line in lines)


def test_an_80_column_terminal_groups_metrics_by_suite_instead_of_cutting_names():
    lines = _render(80)
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)
    suites = [line.replace("│", " ").split()[0] for line in lines if line.replace("│", " ").strip().endswith("/")]
    assert suites == ["deploy/", "instruction_following/", "json_schema/"]
    row = next(line for line in lines if " prompt_strict_acc " in line)
    assert row.replace("│", " ").split()[1:] == ["0.5385"] * 4


def test_more_stages_than_fit_side_by_side_are_split_over_tables_with_nothing_cut():
    stages = {f"eval_stage_{n}": SimpleNamespace(from_=f"model_number_{n}") for n in range(7)}
    table = scores_table(SimpleNamespace(stages=stages), dict.fromkeys(stages, METRICS), width=80)
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)
    assert all(any(f"eval_stage_{n}" in line for line in lines) for n in range(7))
    assert sum("evaluation scores by stage" in line for line in lines) > 1, "several tables"
    assert sum(line.count("0.5385") for line in lines) == 7, "each stage's score printed once"
