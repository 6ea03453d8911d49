"""The quickstart SFT training written as a plain trl script: the baseline for bench/overhead.py.

Same model, data and SFTConfig settings as the workbench stage; no caching, validation or tracking.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from datasets import Dataset


def main(model_dir: str, data: str, output_dir: str, settings_json: str) -> None:
    settings = json.loads(settings_json)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [json.loads(line) for line in open(data)]
    dataset = Dataset.from_list(
        [{"messages": r["messages"], "tools": json.dumps(r["tools"]) if r.get("tools") else None} for r in rows]
    )
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=settings["max_steps"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="cosine",
        max_length=settings["max_length"],
        assistant_only_loss=True,
        bf16=settings.get("bf16", False),
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    output = trainer.train()
    trainer.save_model(output_dir)
    tokens = max((entry.get("num_tokens", 0) for entry in trainer.state.log_history), default=0)
    print(json.dumps({"num_tokens": tokens, "train_runtime": output.metrics["train_runtime"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
