"""Architecture explorer engine: plain Python + PyTorch, never imports streamlit.

Pages and the CLI (`python -m explorer ...`) are thin layers over these modules.
"""
from explorer.errors import ExplorerError
from explorer.spec import ModelSpec

__all__ = ["ExplorerError", "ModelSpec"]
