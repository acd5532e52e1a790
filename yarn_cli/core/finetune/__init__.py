"""`yarn finetune`'s recipe and memory arithmetic."""
