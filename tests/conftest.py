"""Shared test settings."""

import pytest
import torch

# A spinglass study small enough to run in seconds (every part still runs).
TINY_SPINGLASS = ["seeds=1", 
    "fig2.D=4", "fig2.N=20", "fig2.P=[5,300]", "fig2.P_gd=300", "fig2.gd_steps=100",
    "fig4a.D=4", "fig4a.P=[5,50,300]", "fig4a.N=[2,10,40]", "fig4a.repeats=1",
    "fig4b.D=4", "fig4b.P=500", "fig4b.N=[10,30]", "fig4b.gd_steps=2000", "fig4b.gd_lr=1e-2", "fig4b.n_test=200",
    "figS1.D=4", "figS1.N=30", "figS1.alpha=[0.5,1.0,1.25,1.5,2.0]", "figS1.repeats=2", "figS1.n_test=200",
    "figS7.D=[3,4]",
    "figS4.D=4", "figS4.P=300", "figS4.N=20", "figS4.correlation=[0.0,0.5]", "figS4.gd_steps=200", "figS4.n_test=100",
    "diversity.D=4", "diversity.N=40", "diversity.P=[5,20,100,1000]", "diversity.repeats=1", "diversity.n_test=200",
]


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory):
    """A tiny random Llama (3 layers, 4 heads, a BPE tokenizer over digits and "->#") saved as a Hugging Face folder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, trainers

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=48, special_tokens=["<bos>", "<unk>"], initial_alphabet=list("0123456789->#"))
    tok.train_from_iterator(["1->2#13->14#10->11#7->9"] * 50, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder
