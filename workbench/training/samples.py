"""A few greedy generations on held-out prompts, so a reviewer sees what a stage changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.api.context import StageContext


def prompts_from_records(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Each record's conversation up to its last assistant turn, with that turn as the reference."""
    prompts = []
    for data in records[:count]:
        messages = data["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(
            {"messages": messages[:last], "tools": data.get("tools"), "reference": messages[last]["content"]}
        )
    return prompts


def generate_samples(model, tokenizer, prompts: list[dict[str, Any]], max_new_tokens: int = 64) -> list[str]:
    """Greedy completions, special tokens kept so tool-call markers stay visible."""
    import torch

    outputs = []
    if not prompts:
        return outputs
    model.eval()
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            prompt["messages"], tools=prompt["tools"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            generated = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new_tokens = generated[0, ids["input_ids"].shape[1] :]
        outputs.append(tokenizer.decode(new_tokens, skip_special_tokens=False).removesuffix(tokenizer.eos_token))
    return outputs


def log_samples(ctx: StageContext, prompts, before: list[str], after: list[str]) -> None:
    """Log prompt/reference/before/after rows as `samples.json` on the stage's run; print the first two."""
    rows = [
        {"prompt": p["messages"][-1]["content"], "reference": p["reference"], "before": b, "after": a}
        for p, b, a in zip(prompts, before, after, strict=True)
    ]
    ctx.tracker.log_dict(rows, "samples.json")
    for row in rows[:2]:
        ctx.console.print(f"  [dim]prompt:[/] {row['prompt'][:100]}")
        ctx.console.print(f"  [dim]before:[/] {row['before'][:100]!r}")
        ctx.console.print(f"  [dim]after: [/] {row['after'][:100]!r}")
