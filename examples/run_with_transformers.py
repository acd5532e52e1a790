"""Load an extended folder with transformers and run a prompt longer than the original context.

python examples/run_with_transformers.py tiny-qwen2-yarn4x
"""

import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

folder = sys.argv[1]
config = AutoConfig.from_pretrained(folder)
parameters = config.rope_parameters
print("rope:", {k: v for k, v in parameters.items() if k in ("rope_type", "factor", "original_max_position_embeddings", "attention_factor")})
model = AutoModelForCausalLM.from_pretrained(folder).eval()
length = config.max_position_embeddings
ids = torch.randint(0, config.vocab_size, (1, length))
with torch.no_grad():
    logits = model(ids).logits
print(f"forward pass over {length} tokens ok; logits {tuple(logits.shape)}")
