"""Every YAML in configs/ loads against its schema and builds what it describes (presets cannot rot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config, to_object
from manipulator.metric.models import build_encoders
from manipulator.metric.train import MetricConfig, check_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "metric").glob("*.yaml")), ids=lambda p: p.name)
def test_metric_configs_load_and_build(path):
    files = [path] if path.name == "base.yaml" or "_base_" in path.read_text() else [CONFIGS / "metric/base.yaml", path]
    cfg = load_config(MetricConfig, files)
    check_config(cfg)
    nets = build_encoders(list(cfg.modalities), cfg.size, cfg.embed_dim, 51, to_object(cfg.inputs).audio_kind)
    assert set(cfg.modalities) <= set(nets)
    tiny = load_config(MetricConfig, files + [CONFIGS / "metric/tiny.yaml"])
    assert tiny.size == "tiny" and tiny.engine.max_steps <= 100


@pytest.mark.parametrize("path", sorted((CONFIGS / "manipulator").glob("*.yaml")), ids=lambda p: p.name)
def test_manipulator_configs_load_and_build(path):
    from manipulator.models import build_manipulator
    from manipulator.train import ManipulatorConfig

    files = (
        [path]
        if path.name == "base.yaml" or "_base_" in path.read_text()
        else [CONFIGS / "manipulator/base.yaml", path]
    )
    cfg = load_config(ManipulatorConfig, files)
    nets = build_manipulator(51, len(cfg.emotions), cfg.size, cfg.residual_generator)
    assert set(nets) == {"generator", "mapping", "style", "discriminator"}
    tiny = load_config(ManipulatorConfig, files + [CONFIGS / "manipulator/tiny.yaml"])
    assert tiny.size == "tiny" and tiny.engine.max_steps <= 100
    assert load_config(ManipulatorConfig, [CONFIGS / "manipulator/scmcl.yaml"]).scmcl.enabled


@pytest.mark.parametrize("path", sorted((CONFIGS / "refiner").glob("*.yaml")), ids=lambda p: p.name)
def test_refiner_configs_load_and_build(path):
    import torch

    from renderer.refine.net import SIZES, RefineNet
    from renderer.refine.train import RefinerConfig

    files = [path] if path.name == "base.yaml" else [CONFIGS / "refiner/base.yaml", path]
    cfg = load_config(RefinerConfig, files)
    net = RefineNet(SIZES[cfg.size])
    x = torch.zeros(1, 7, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 3, cfg.image_size, cfg.image_size)
    assert float(out.abs().max()) == 0.0  # an untrained refiner adds nothing: it is the warp
    tiny = load_config(RefinerConfig, files + [CONFIGS / "refiner/tiny.yaml"])
    assert tiny.size == "tiny" and tiny.engine.max_steps <= 100
