"""The quickstart preference training written as a plain trl script: the baseline for `bench/overhead.py --stage
preference`.

Same model, pairs and DPOConfig settings as the workbench stage with `preset: dpo` (trl's sigmoid loss at the same
beta, a reference forward every step); no caching, validation or tracking.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from datasets import Dataset


def _turns(value, role):
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def main(model_dir: str, data: str, output_dir: str, settings_json: str) -> None:
    settings = json.loads(settings_json)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [json.loads(line) for line in open(data)]
    dataset = Dataset.from_list(
        [
            {
                "prompt": r["messages"],
                "chosen": _turns(r["chosen"], "assistant"),
                "rejected": _turns(r["rejected"], "assistant"),
                "tools": json.dumps(r["tools"]) if r.get("tools") else None,
            }
            for r in rows
        ]
    )
    args = DPOConfig(
        output_dir=output_dir,
        max_steps=settings["max_steps"],
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="cosine",
        max_length=settings["max_length"],
        beta=0.1,
        precompute_ref_log_probs=False,
        bf16=False,
        use_cpu=True,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    output = trainer.train()
    trainer.save_model(output_dir)
    print(json.dumps({"train_runtime": output.metrics["train_runtime"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
