"""train_adapter's own tokenization and CPU loss give what TRL's own pipeline gives."""

import pytest
import torch

from fedrouter.data import generate_synthetic
from fedrouter.training import (
    TrainSettings,
    _sft_trainer_class,
    sft_config,
    to_prompt_completion,
    tokenize_rows,
)


def mixed_rows(n_per_task=6):
    rows = generate_synthetic()
    tasks = sorted({r["task"] for r in rows})
    return [r for t in tasks for r in [x for x in rows if x["task"] == t][:n_per_task]]


@pytest.mark.parametrize("max_length", [256, 70])
def test_tokenize_rows_matches_trl_preparation(qlora_model, tmp_path, max_length):
    from datasets import Dataset
    from trl import SFTTrainer

    model, tokenizer, _ = qlora_model
    rows = mixed_rows()
    settings = TrainSettings(max_steps=1, batch_size=2, seq_length=max_length)
    args = sft_config(settings, 1e-3, 0, str(tmp_path))
    args.dataset_kwargs = {}  # let TRL prepare the raw prompt/completion rows itself
    trl = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(to_prompt_completion(rows, settings.template)),
        processing_class=tokenizer,
    ).train_dataset
    ours = tokenize_rows(rows, tokenizer, settings.template, max_length)
    assert ours["input_ids"] == trl["input_ids"]
    assert ours["labels"] == trl["labels"]
    if max_length == 70:  # cuts some responses short, and drops rows whose prompt fills 70
        assert any(len(ids) == 70 for ids in ours["input_ids"])
        assert 0 < len(ours["input_ids"]) < len(rows)


def test_cpu_loss_equals_trl_fused_loss(qlora_model, tmp_path):
    from datasets import Dataset
    from trl import SFTTrainer

    model, tokenizer, _ = qlora_model
    assert not torch.cuda.is_available()  # the plain-loss subclass is the CPU path
    rows = mixed_rows(2)
    settings = TrainSettings(max_steps=1, batch_size=len(rows), seq_length=256)
    dataset = Dataset.from_dict(tokenize_rows(rows, tokenizer, settings.template, 256))
    losses = []
    for cls in (SFTTrainer, _sft_trainer_class()):
        trainer = cls(
            model=model,
            args=sft_config(settings, 1e-3, 0, str(tmp_path)),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        model.eval()
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, dict(batch)).item())
    assert cls is not SFTTrainer
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
