"""Every Python block of the README runs as written, on the run and model folders its commands name."""

import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from iclab.train import apply_overrides, default_config, train  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def tiny_llama_folder(folder: Path) -> None:
    """A 2-layer random Llama with a small BPE tokenizer: what `models/my-llama` stands for."""
    from tokenizers import Tokenizer, models, trainers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64, bos_token_id=0, eos_token_id=1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=64, special_tokens=["<bos>", "<unk>"], initial_alphabet=list("0123456789->#"))
    tok.train_from_iterator(["1->2#3->4#10->11"] * 20, trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>").save_pretrained(folder)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    # the README's `iclab train --task linreg --out runs/lr1 --set model.n_layers=4 --set train.steps=5000`, shortened to
    # the first snapshot (every train.checkpoint_every = 500 steps by default) that the README loads
    config = apply_overrides(default_config("linreg"), ["model.n_layers=4", "model.d_model=16", "train.steps=500",
                                                        "train.log_every=100"])
    train(config, tmp_path / "runs" / "lr1", "cpu", progress=False)
    tiny_llama_folder(tmp_path / "models" / "my-llama")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["ablated"].shape == namespace["logits"].shape
    assert not torch.equal(namespace["ablated"], namespace["logits"]), "zeroing a head changed nothing"
    assert namespace["cache"].z.shape[2] == 1
    assert namespace["preds"].shape == (4, 10) and namespace["model"].n_layers == 2
    assert namespace["early"].step == 500


def test_readme_loading_a_run_comments_name_what_works(tmp_path, monkeypatch):
    """What the README's comments offer as alternatives runs too: a snapshot by step, a token run as a HeadModel."""
    import iclab

    monkeypatch.chdir(tmp_path)
    text = README.read_text()
    assert 'load_run("runs/lr1", step=500)' in text and "an iclab run of a token task" in text
    config = apply_overrides(default_config("induction"), ["model.n_layers=1", "model.d_model=16", "train.steps=5"])
    train(config, tmp_path / "runs" / "ind", "cpu", progress=False)
    assert iclab.load_model("runs/ind").n_layers == 1
