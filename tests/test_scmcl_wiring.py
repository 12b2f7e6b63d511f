"""SCMCL wiring: which networks each loss trains, the retrieved pairs and their distances, φ's training record,
the consistency switch, the paired loss's normalisation and the image-level terms, on constructed inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from common.checkpoint import save_checkpoint
from common.errors import UserError
from common.schedules import set_lr
from manipulator.data import Retriever, ScmclBatch, WindowBank
from manipulator.losses import balanced_weight, compute_g_loss, correlation_loss, paired_loss
from manipulator.metric.index import INDEX_FORMAT
from manipulator.metric.models import AffineScale, build_encoders, load_metric, phi_trained
from manipulator.metric.steps import build_optimizer, compute_losses
from manipulator.metric.train import phi_state
from manipulator.models import SIZES, build_manipulator
from manipulator.steps import NedBatch, build_optimizers, discriminator_step, generator_step
from renderer.scmcl import ScmclImageTerms

EMOTIONS = ["neutral", "happy", "sad"]


def test_paired_loss_is_divided_by_the_number_of_valid_targets():
    """The weight 1/(1+d_a) is an absolute confidence: two far pairs (weight 0.5) pull half as hard as two
    identical pairs with weight 1 (dividing by the weights' sum made both batches pull the same)."""
    target = torch.randn(2, 10, 6)
    valid = torch.ones(2)
    far = paired_loss(-target, target, torch.full((2,), 0.5), valid)
    near = paired_loss(-target, target, torch.ones(2), valid)
    assert far.item() == pytest.approx(1.0, abs=1e-5) and near.item() == pytest.approx(2.0, abs=1e-5)
    # an invalid slot (no target) neither pulls nor counts: [valid cos=-1 at weight 1, invalid]
    one = paired_loss(-target, target, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert one.item() == pytest.approx(2.0, abs=1e-5)
    assert paired_loss(-target, target, torch.zeros(2), torch.zeros(2)).item() == 0.0


def _frozen_metric(root: Path) -> tuple[nn.Module, nn.Module]:
    """The expression encoder and a trained φ as the manipulator gets them: through load_metric."""
    nets, _ = load_metric(_metric_run(root, "affine", 6, {"expr": True}), ["expr", "phi_expr"])
    return nets["expr"], nets["phi_expr"]


def _snapshot(nets: dict) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}


def _changed(before, nets) -> set[str]:
    return {
        n
        for n, net in nets.items()
        if any(not torch.equal(a, p) for a, p in zip(before[n], net.parameters(), strict=True))
    }


def test_each_step_updates_only_its_networks_and_never_the_frozen_metric(tmp_path):
    torch.manual_seed(0)
    dim, b = 6, 4
    nets = build_manipulator(dim, len(EMOTIONS), "tiny")
    optims = build_optimizers(nets, 1e-3, (0.0, 0.99))
    f_expr, phi = _frozen_metric(tmp_path)
    frozen = {"f_expr": f_expr, "phi": phi}
    x = torch.randn(b, 10, dim)
    batch = NedBatch(
        x,
        torch.tensor([0, 0, 1, 2]),
        torch.randn(b, 10, dim),
        torch.tensor([1, 2, 0, 1]),
        torch.randn(b, SIZES["tiny"].latent_dim),
    )
    scmcl = ScmclBatch(
        target=torch.randn(b, 10, dim),
        reference=x,
        weight=torch.full((b,), 0.5),
        valid=torch.ones(b),
        d_audio=torch.full((b,), 0.3),
        corr_valid=torch.ones(b),
        f_expr=f_expr,
        phi=phi,
        visual_ref="source",
        window=5,
    )
    weights = SimpleNamespace(
        lambda_sty=1.0, lambda_cyc=1.0, lambda_mouth=1.0, lambda_paired=10.0, lambda_corr=1.0, paired_form="cosine"
    )
    expected = {"latent": {"generator", "mapping", "style"}, "ref": {"generator"}}
    for branch, updated in expected.items():
        before, before_frozen = _snapshot(nets), _snapshot(frozen)
        logs = generator_step(nets, optims, weights, batch, branch, scmcl)
        assert _changed(before, nets) == updated, branch
        assert not _changed(before_frozen, frozen) and all(p.grad is None for p in f_expr.parameters())
        assert f"g/paired_{branch}" in logs and f"g/corr_{branch}" in logs
        before = _snapshot(nets)
        discriminator_step(nets, optims, batch, branch)
        assert _changed(before, nets) == {"discriminator"}, branch


def test_scmcl_terms_send_gradients_to_the_generator_and_the_style_source_only(tmp_path):
    """Per term: the paired and correlation losses reach G and (latent branch) F, not E or D; the frozen
    expression encoder and φ get none."""
    torch.manual_seed(1)
    dim, b = 6, 3
    nets = build_manipulator(dim, len(EMOTIONS), "tiny")
    f_expr, phi = _frozen_metric(tmp_path)
    x, target = torch.randn(b, 10, dim), torch.randn(b, 10, dim)
    s = nets["mapping"](torch.randn(b, SIZES["tiny"].latent_dim), torch.tensor([1, 2, 1]))
    fake = nets["generator"](x, s)
    terms = {
        "paired": paired_loss(fake, target, torch.full((b,), 0.5), torch.ones(b)),
        "corr": correlation_loss(f_expr, phi, fake, x, torch.full((b,), 0.2), torch.ones(b), 5),
    }
    for name, loss in terms.items():
        reached = set()
        for net_name, net in nets.items():
            grads = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True, allow_unused=True)
            if any(g is not None and g.abs().sum() > 0 for g in grads):
                reached.add(net_name)
        assert reached == {"generator", "mapping"}, name
        loss.backward(retain_graph=True)
        assert all(p.grad is None for p in [*f_expr.parameters(), *phi.parameters()]), name


def test_correlation_term_uses_the_reference_window_and_skips_invalid_pairs():
    f = nn.Flatten()
    phi = AffineScale()
    fake, ref, src = torch.zeros(2, 10, 3), torch.ones(2, 10, 3), torch.full((2, 10, 3), 5.0)
    d_v_ref = (f(fake[:, -5:]) - f(ref[:, -5:])).norm(dim=-1)  # sqrt(15) each
    nets = {
        "generator": lambda x, s: fake,
        "discriminator": lambda x, y: torch.ones(len(x)),
        "style": lambda x: torch.zeros(len(x), 4),
    }
    weights = SimpleNamespace(
        lambda_sty=0.0, lambda_cyc=0.0, lambda_mouth=0.0, lambda_paired=0.0, lambda_corr=1.0, paired_form="cosine"
    )
    scmcl = ScmclBatch(
        target=src,
        reference=ref,
        weight=torch.ones(2),
        valid=torch.ones(2),
        d_audio=torch.tensor([1.0, 100.0]),
        corr_valid=torch.tensor([1.0, 0.0]),
        f_expr=f,
        phi=phi,
        visual_ref="source",
        window=5,
    )
    _, logs = compute_g_loss(nets, weights, src, torch.tensor([1, 1]), torch.zeros(2, 4), scmcl)
    assert logs["g/corr"] == pytest.approx(float(d_v_ref[0]) - 1.0, abs=1e-5)  # the invalid pair (100) is out
    scmcl = replace(scmcl, phi=None)  # paired-only: no correlation term at all
    _, logs = compute_g_loss(nets, weights, src, torch.tensor([1, 1]), torch.zeros(2, 4), scmcl)
    assert "g/corr" not in logs and "g/paired" in logs


def test_the_correlation_weight_is_capped_by_the_gradient_ratio():
    fake = torch.zeros(2, 3, requires_grad=True)
    paired = (fake * 2.0).sum()  # gradient norm 2 * sqrt(6)
    corr = (fake * 8.0).sum()  # gradient norm 8 * sqrt(6): 4x the paired term's
    cap = SimpleNamespace(corr_max_grad_ratio=0.5)
    weight, grads = balanced_weight(paired, corr, fake, 1.0, cap)
    assert weight == pytest.approx(0.5 / 4) and grads["g/grad_paired"] == pytest.approx(2 * 6**0.5, rel=1e-5)
    assert grads["g/grad_corr"] == pytest.approx(0.5 * grads["g/grad_paired"], rel=1e-5)  # capped at the ratio
    assert balanced_weight(paired, corr, fake, 0.01, cap)[0] == 0.01  # below the cap: lambda_corr itself
    assert balanced_weight(paired, corr, fake, 1.0, SimpleNamespace(corr_max_grad_ratio=None))[0] == 1.0


def test_consistency_term_switches_on_at_consistency_start():
    torch.manual_seed(2)
    nets = build_encoders(["audio", "expr"], "tiny", 8, 6, "mel")
    cfg = SimpleNamespace(
        modalities=["audio", "expr"], temperature=1.0, consistency="affine", consistency_start=3, lambda_consistency=1.0
    )
    emb = {"audio": (torch.randn(4, 8), torch.randn(4, 8)), "expr": (torch.randn(4, 8), torch.randn(4, 8))}
    before, terms_before = compute_losses(cfg, nets, emb, step=2)
    after, terms_after = compute_losses(cfg, nets, emb, step=3)
    assert set(terms_before) == {"nce/audio", "nce/expr"}
    assert set(terms_after) == {"nce/audio", "nce/expr", "consistency/expr"}
    assert after.item() == pytest.approx(before.item() + terms_after["consistency/expr"].item(), abs=1e-5)
    after.backward()
    assert nets["phi_expr"].weight.grad is not None and nets["phi_expr"].weight.grad != 0
    assert phi_state(cfg, 3) == {"expr": False} and phi_state(cfg, 4) == {"expr": True}
    assert phi_state(SimpleNamespace(**{**vars(cfg), "consistency": "softmax"}), 100) == {"expr": False}


def _metric_run(root: Path, consistency: str, step: int, recorded: dict | None) -> Path:
    nets = build_encoders(["audio", "expr"], "tiny", 8, 6, "mel")
    config = {
        "modalities": ["audio", "expr"],
        "size": "tiny",
        "embed_dim": 8,
        "consistency": consistency,
        "consistency_start": 5,
        "inputs": {"audio_kind": "mel"},
    }
    extra = {"expr_dim": 6} | ({"phi_trained": recorded} if recorded is not None else {})
    state = {"step": step, "nets": {k: v.state_dict() for k, v in nets.items()}, "config": config, "extra": extra}
    save_checkpoint(root / "checkpoints", step, state, keep_last=1)
    return root


def test_an_untrained_phi_is_refused(tmp_path):
    softmax = _metric_run(tmp_path / "softmax", "softmax", 20, {"expr": False})
    with pytest.raises(UserError, match="never trained"):
        load_metric(softmax, ["expr", "phi_expr"])
    assert set(load_metric(softmax, ["expr"])[0]) == {"expr"}  # the encoder alone is fine
    stopped_early = _metric_run(tmp_path / "early", "affine", 5, None)  # older checkpoint: inferred from the config
    with pytest.raises(UserError, match="never trained"):
        load_metric(stopped_early, ["phi_expr"])
    trained = _metric_run(tmp_path / "trained", "affine", 6, None)
    assert "phi_expr" in load_metric(trained, ["phi_expr"])[0]
    ckpt = {"step": 1, "config": {"consistency": "none"}, "extra": {"phi_trained": {"expr": True}}}
    assert phi_trained(ckpt, "expr") and not phi_trained(ckpt, "visual")  # the record wins over the config


@pytest.fixture(scope="module")
def three_emotions(processed_tiny, tmp_path_factory) -> Path:
    """processed_tiny's clips with one happy clip relabelled sad (a third emotion for the pivot pairs)."""
    root = tmp_path_factory.mktemp("three") / "toy"
    root.mkdir()
    index = json.loads((processed_tiny / "clips.json").read_text())
    (root / "W001").symlink_to(processed_tiny / "W001", target_is_directory=True)
    relabelled = next(c for c in index["clips"] if c["emotion"] == "happy" and c["split"] == "train")
    relabelled["emotion"] = "sad"
    (root / "clips.json").write_text(json.dumps(index))
    return root


def _npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_retriever_returns_the_planted_pairs(three_emotions, tmp_path):
    bank = WindowBank(three_emotions, ("train",), EMOTIONS, 10, 1)
    dirs = {
        e: next(d for d, lab in zip(bank.clip_dirs, bank.labels, strict=True) if EMOTIONS[lab] == e) for e in EMOTIONS
    }
    clips = [dirs["neutral"], dirs["happy"], dirs["sad"]]
    out = tmp_path / "index"
    i32, f32 = np.int32, np.float32
    inf = np.inf
    table = {"neutral": [0, 5], "happy": [3, 7], "sad": [2]}
    for c, emotion in enumerate(EMOTIONS):
        starts = np.array(table[emotion], i32)
        table_of = {"clip": np.full(len(starts), c, i32), "start": starts, "anchor": starts + 9}
        _npz(out / "W001" / f"windows_{emotion}.npz", **table_of, silent=np.zeros(len(starts), bool))
    _npz(
        out / "W001/neutral__happy.npz",
        idx=np.array([[1, -1], [0, -1]], i32),
        dist=np.array([[0.4, inf], [0.2, inf]], f32),
    )
    _npz(
        out / "W001/happy__sad.npz",
        idx=np.array([[-1, -1], [0, -1]], i32),
        dist=np.array([[inf, inf], [0.8, inf]], f32),
        pivot=np.array([-1, 1], i32),
        hop1=np.array([inf, 0.3], f32),
        hop2=np.array([[inf, inf], [0.5, inf]], f32),
    )
    (out / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "seq_len_frames": 10, "clips": clips}))
    retriever = Retriever(bank, out)
    h, s = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    sources = np.array(
        [
            bank.row_of(dirs["neutral"], 0),
            bank.row_of(dirs["happy"], 7),
            bank.row_of(dirs["happy"], 3),
            bank.row_of(dirs["neutral"], 9),
            bank.row_of(dirs["happy"], 3),
        ]
    )
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    got = retriever.fetch(sources, np.array([h, s, h, h, s]), rng())
    window = lambda d, t: bank.windows(np.array([bank.row_of(d, t)]))[0]  # noqa: E731
    # neutral@0 -> happy: the planted candidate happy@7 at 0.4, compared with the source itself
    torch.testing.assert_close(got.target[0], window(dirs["happy"], 7))
    torch.testing.assert_close(got.reference[0], window(dirs["neutral"], 0))
    # happy@7 -> sad through the pivot neutral@5: target sad@2; the correlation pair is (pivot, target) at hop2
    torch.testing.assert_close(got.target[1], window(dirs["sad"], 2))
    torch.testing.assert_close(got.reference[1], window(dirs["neutral"], 5))
    np.testing.assert_allclose(got.d_audio.numpy(), [0.4, 0.5, 0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(got.weight.numpy(), [1 / 1.4, 1 / 1.8, 1.0, 0.0, 0.0], atol=1e-6)
    # happy@3 -> happy is its own target (paired) but no correlation pair; neutral@9 is not in the index;
    # happy@3 -> sad has no pivot
    assert got.valid.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert got.corr_valid.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(got.target[2], window(dirs["happy"], 3))
    # the published pivot distance: the source's hop to the pivot (0.3) instead of the pivot's to the target
    published = Retriever(bank, out, pivot_distance="source_hop").fetch(sources, np.array([h, s, h, h, s]), rng())
    np.testing.assert_allclose(published.d_audio.numpy(), [0.4, 0.3, 0.0, 0.0, 0.0], atol=1e-6)
    # a distance threshold: neutral@0 -> happy (0.4) still qualifies at 0.5, happy@7 -> sad (0.8) does not,
    # and a source without a qualifying candidate has no pair at all: both SCMCL losses skip it
    near = Retriever(bank, out, dist_thresh=0.5).fetch(sources, np.array([h, s, h, h, s]), rng())
    assert near.valid.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0] and near.corr_valid.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert near.weight[1] == 0.0
    old = out / "index.json"  # an index from before silent windows were masked is refused
    old.write_text(json.dumps({"format": INDEX_FORMAT - 1, "seq_len_frames": 10, "clips": clips}))
    with pytest.raises(UserError, match="rebuild it"):
        Retriever(bank, out)


class _MeanColour(nn.Module):
    """A known image encoder: the mean colour of the crop (B, 3)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.mean(dim=(-1, -2))


def test_image_terms_on_constructed_inputs():
    terms = ScmclImageTerms.__new__(ScmclImageTerms)
    terms.cfg = SimpleNamespace(scmcl=SimpleNamespace(lambda_corr=1.0, lambda_paired=1.0))
    terms.n_g, terms.crop_kind, terms.visual_size = 1, "face", 4
    terms.f_img, terms.phi = _MeanColour(), AffineScale()
    with torch.no_grad():
        terms.phi.weight.fill_(2.0)
        terms.phi.bias.fill_(0.1)
    size = 8
    source = torch.zeros(2, 3, size, size)
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, 2:6, 2:6] = 1
    target = torch.full((2, 3, size, size), 0.5)
    d_a = torch.tensor([0.0, 1.0])
    cond = torch.zeros(2, 3, size, size)
    terms.sample = lambda rng: (cond, mask, source, target, d_a)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.level = nn.Parameter(torch.tensor(0.2))

        def forward(self, c, prev, m):
            return torch.zeros_like(c) + self.level

    gen = Generator()
    loss, logs = terms(gen, np.random.default_rng(0))
    # d_img = ||(0.1, 0.1, 0.1) - 0|| on the [0, 1] scale ((x + 1) / 2), corr = mean |2 d_img + 0.1 - d_a|
    d_img = np.sqrt(3) * 0.1
    assert logs["scmcl/d_img"] == pytest.approx(d_img, abs=1e-5)
    assert logs["scmcl/corr"] == pytest.approx(np.mean([abs(2 * d_img + 0.1 - d) for d in (0.0, 1.0)]), abs=1e-5)
    # paired: masked L1 summed over the 3 channels = 3 * 0.3, weighted 1/(1 + d_a), mean over the batch
    assert logs["scmcl/paired"] == pytest.approx(np.mean([3 * 0.3 / (1 + d) for d in (0.0, 1.0)]), abs=1e-5)
    loss.backward()
    assert gen.level.grad is not None and gen.level.grad != 0


def test_phi_learns_at_its_own_rate():
    """φ is two scalars: at the encoders' fine-tuning rate (2e-5) 200 steps leave it the identity; it has its own
    group at phi_lr (no weight decay, which would pull its weight to 0), scaled by the same schedule."""
    torch.manual_seed(3)
    nets = build_encoders(["audio", "expr"], "tiny", 8, 6, "mel")
    opt = build_optimizer(nets, 2e-5, 0.1, phi_lr=1e-2)
    set_lr(opt, 1e-5)  # the schedule at half the base rate
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-5), pytest.approx(5e-3)]
    assert opt.param_groups[1]["weight_decay"] == 0.0
    cfg = SimpleNamespace(
        modalities=["audio", "expr"], temperature=1.0, consistency="affine", consistency_start=0, lambda_consistency=1.0
    )
    emb = {"audio": (torch.randn(4, 8), torch.randn(4, 8)), "expr": (torch.randn(4, 8), torch.randn(4, 8))}
    loss, _ = compute_losses(cfg, nets, emb, step=0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    # Adam's first step moves every parameter with a gradient by its group's rate
    assert abs(nets["phi_expr"].weight.item() - 1.0) == pytest.approx(5e-3, rel=1e-3)
