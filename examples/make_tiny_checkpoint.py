"""Write a tiny random Qwen2-style checkpoint (no download) to try `yarn extend` on an HF folder.

python examples/make_tiny_checkpoint.py tiny-qwen2
yarn-cli extend tiny-qwen2 --scale 4 --bake-temperature
python examples/run_with_transformers.py tiny-qwen2-yarn4x
"""

import sys

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

target = sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2"
config = Qwen2Config(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(config).save_pretrained(target)
print(f"wrote {target}/ (trained length {config.max_position_embeddings})")
