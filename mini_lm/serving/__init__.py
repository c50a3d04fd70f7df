"""Serve a trained model over an OpenAI-compatible HTTP API, with a chat page.

    mini-lm serve runs/quickstart/pretrain         # http://127.0.0.1:8000 (page), /v1/... (API)

``create_app(model, tokenizer, model_name, limits)`` builds the FastAPI app; ``mini-lm serve``
loads the model with ``mini_lm.generation.load_for_generation`` and runs it under uvicorn.
"""

from .app import check_api_key, create_app
from .background import serve_in_thread
from .limits import ServeLimits

__all__ = ["ServeLimits", "check_api_key", "create_app", "serve_in_thread"]
