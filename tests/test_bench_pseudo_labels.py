"""bench.pseudo_labels: a failure to read the dataset configs is an error, not a silent switch to
hard-coded CRF parameters (issue 20)."""
from __future__ import annotations

import pytest


def test_a_config_error_is_not_swallowed(monkeypatch):
    import configs
    from bench import pseudo_labels

    def broken(*args, **kwargs):
        raise RuntimeError("configs unreadable")

    monkeypatch.setattr(configs, "get_config", broken)
    with pytest.raises(RuntimeError, match="configs unreadable"):
        pseudo_labels.main(["--quick", "--no-unet", "--no-quality", "--workers", "1", "--repeats", "1"])
