"""mini_lm: train small GPT-2 / Qwen2 / BERT language models end to end with the HuggingFace stack."""

__version__ = "0.1.0"
