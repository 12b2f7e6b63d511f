"""NED's released manipulator checkpoints: strict loading into our networks, clear mismatch lines, a fine-tune
from one (init_from=), editing with an imported run. The files are written here in NED's layout (random values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

from common.checkpoint import load_checkpoint, save_checkpoint
from common.errors import FormatError, UserError
from common.formats import Clip, read_clip_index
from evaluation.run import Evaluator
from manipulator.edit import Editor
from manipulator.editing import edit_expr, label_style
from manipulator.expr_norm import Normaliser
from manipulator.models import build_manipulator
from manipulator.ned import (
    NED_EMOTIONS,
    NED_NETS,
    is_ned_manipulator,
    ned_run_state,
    our_key,
    read_ned_manipulator,
)


# NED's manipulator networks as its manipulator/models/networks.py lays them out (foivospar/NED @22721de),
# transcribed here independently of manipulator.ned: the files below get NED's key names from NED's own module
# structure, not from the key mapping under test. Sizes: 51 coefficients, latent 4, hidden 64, style 16.
def _mlp(*sizes: int) -> torch.nn.Sequential:
    """Linear layers of `sizes` with a ReLU after every one but the last (NED's seq1/seq2/shared/unshared)."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


class NedGenerator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seq1 = torch.nn.Sequential(*_mlp(51 + 16, 512, 512), torch.nn.ReLU())
        self.LSTM = torch.nn.LSTM(512, 512, 2, batch_first=True, bidirectional=True)
        self.seq2 = _mlp(1024, 1024, 1024, 51)

    def forward(self, x, s):  # x (B, T, 51), s (B, 16): the style repeated along time, concatenated
        x = torch.cat([x, s[:, None].expand(-1, x.shape[1], -1)], 2)
        return self.seq2(self.LSTM(self.seq1(x))[0])


class NedSequenceNet(torch.nn.Module):
    """NED's StyleEncoder (out 16) and Discriminator (out = emotions): the same trunk, averaged over time."""

    def __init__(self, n_out: int):
        super().__init__()
        self.seq1 = torch.nn.Sequential(*_mlp(51, 512, 256), torch.nn.ReLU())
        self.LSTM = torch.nn.LSTM(256, 128, 2, batch_first=True, bidirectional=True)
        self.seq2 = _mlp(256, 128, 64, n_out)

    def forward(self, x, y=None):
        out = self.seq2(self.LSTM(self.seq1(x))[0]).mean(1)
        return out if y is None else out[torch.arange(len(y)), y]


class NedMapping(torch.nn.Module):
    def __init__(self, n_emotions: int):
        super().__init__()
        self.shared = torch.nn.Sequential(*_mlp(4, 64, 64, 64), torch.nn.ReLU())
        self.unshared = torch.nn.ModuleList(_mlp(64, 64, 16) for _ in range(n_emotions))

    def forward(self, z, y):
        h = self.shared(z)
        return torch.stack([head(h) for head in self.unshared], 1)[torch.arange(len(y)), y]


def ned_nets(n_emotions: int = len(NED_EMOTIONS)) -> dict[str, torch.nn.Module]:
    """NED's four nets under NED's names, random weights (seeded)."""
    torch.manual_seed(0)
    return {
        "generator": NedGenerator(),
        "mapping_network": NedMapping(n_emotions),
        "style_encoder": NedSequenceNet(16),
        "discriminator": NedSequenceNet(n_emotions),
    }


def ned_file(path, drop_d=False, edit=None):
    """A file as NED's CheckpointIO writes it: {net name: state dict} for NED's nets. Returns the nets."""
    nets = ned_nets()
    out = {name: net.state_dict() for name, net in nets.items() if not (drop_d and name == "discriminator")}
    if edit:
        edit(out)
    torch.save(out, path)
    return nets


def test_key_names_follow_neds_networks():
    # NED's names (foivospar/NED manipulator/models/networks.py) for a few parameters of each net
    assert our_key("generator", "seq1.0.weight") == "pre.0.weight"
    assert our_key("generator", "LSTM.weight_hh_l1_reverse") == "lstm.weight_hh_l1_reverse"
    assert our_key("generator", "seq2.4.bias") == "post.4.bias"
    assert our_key("style", "seq2.4.weight") == "trunk.post.4.weight"
    assert our_key("discriminator", "LSTM.bias_ih_l0") == "trunk.lstm.bias_ih_l0"
    assert our_key("mapping", "unshared.6.2.weight") == "heads.6.2.weight"
    assert our_key("mapping", "shared.4.bias") == "shared.4.bias"
    ours = build_manipulator(51, 7, "ned", residual=False)
    for ned_name, net in ned_nets().items():  # every key of the transcription has its place in ours, one to one
        name = NED_NETS[ned_name]
        assert sorted(our_key(name, k) for k in net.state_dict()) == sorted(ours[name].state_dict())


def test_a_ned_file_loads_strictly_and_computes_the_same(tmp_path):
    path = tmp_path / "20_nets_finetuned.pth"
    original = {name: net.eval() for name, net in ned_file(path).items()}
    assert is_ned_manipulator(path) and not is_ned_manipulator(tmp_path)
    states, emotions = read_ned_manipulator(path)
    assert emotions == list(NED_EMOTIONS)
    ours = build_manipulator(51, 7, "ned", residual=False)
    for name, state in states.items():
        ours[name].load_state_dict(state)  # strict
    x, y, z = torch.randn(2, 10, 51), torch.tensor([1, 4]), torch.randn(2, 4)
    with torch.no_grad():
        s = original["mapping_network"](z, y)
        torch.testing.assert_close(ours["mapping"](z, y), s, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours["generator"](x, s), original["generator"](x, s), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours["style"](x), original["style_encoder"](x), rtol=0, atol=1e-6)
        torch.testing.assert_close(ours["discriminator"](x, y), original["discriminator"](x, y), rtol=0, atol=1e-6)
    # DataParallel-saved files (`module.` prefixes) read the same
    prefixed = tmp_path / "21_nets.pth"
    torch.save({k: {f"module.{n}": v for n, v in net.state_dict().items()} for k, net in original.items()}, prefixed)
    again, _ = read_ned_manipulator(prefixed)
    assert all(torch.equal(again[n][k], v) for n, state in states.items() for k, v in state.items())


def test_mismatches_are_one_line_naming_the_file(tmp_path):
    renamed = tmp_path / "1_nets.pth"
    ned_file(renamed, edit=lambda d: d["generator"].__setitem__("seq9.0.weight", d["generator"].pop("seq1.0.weight")))
    with pytest.raises(
        FormatError,
        match=r"1_nets\.pth.*generator: 1 missing key\(s\) \(pre\.0\.weight\); "
        r"1 unexpected key\(s\)",
    ):
        read_ned_manipulator(renamed)
    shaped = tmp_path / "2_nets.pth"
    ned_file(shaped, edit=lambda d: d["style_encoder"].__setitem__("seq2.4.weight", torch.zeros(8, 64)))
    with pytest.raises(
        FormatError,
        match=r"style_encoder: 1 wrong shape\(s\) \(trunk\.post\.4\.weight: \(8, 64\), "
        r"expected \(16, 64\)\)",
    ):
        read_ned_manipulator(shaped)
    junk = tmp_path / "3_nets.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="3_nets.pth: not a PyTorch file"):
        read_ned_manipulator(junk)
    with pytest.raises(UserError, match="4_nets.pth: not found"):
        read_ned_manipulator(tmp_path / "4_nets.pth")
    with pytest.raises(UserError, match="7 emotion heads, but 2 emotions"):
        read_ned_manipulator(shaped, ["neutral", "happy"])


def test_fine_tune_from_a_ned_file(processed_tiny, tmp_path, python_exe, python_env):
    """init_from= a NED file: with lr 0 the run's nets are exactly NED's weights; a size that does not fit is
    refused in one line; an imported run edits without a discriminator."""
    path = tmp_path / "20_nets_finetuned.pth"
    ned_file(path)
    common = [
        "--config",
        "configs/manipulator/ned_baseline.yaml",
        "--config",
        "configs/manipulator/tiny.yaml",
        f"data_dir={processed_tiny}",
        f"engine.runs_root={tmp_path}",
        "val_splits=[]",
        f"init_from={path}",
        "engine.max_steps=2",
        "batch_size=4",
    ]
    bad = run_module(python_exe, python_env, "manipulator.train", *common, check=False)
    assert bad.returncode != 0 and "needs size=ned, residual_generator=False, expr_norm=none" in bad.stderr
    assert "Traceback" not in bad.stderr
    run_module(
        python_exe,
        python_env,
        "manipulator.train",
        *common,
        "size=ned",
        "residual_generator=false",
        "expr_norm=none",
        "lr=0.0",
        "engine.name=from_ned",
    )
    mixed = run_module(
        python_exe,
        python_env,
        "manipulator.train",
        *common[:-3],
        "engine.max_steps=2",
        "size=ned",
        f"init_from={tmp_path}/manipulator/from_ned",
        "engine.name=mixed",
        check=False,
    )
    assert mixed.returncode != 0 and "trained with expr_norm=none; this run has expr_norm=dataset" in mixed.stderr
    ckpt = load_checkpoint(tmp_path / "manipulator/from_ned/checkpoints/step_000000002.pt")
    states, _ = read_ned_manipulator(path)
    for name, state in states.items():
        for key, value in state.items():
            assert torch.equal(ckpt["nets"][name][key], value), (name, key)
    assert ckpt["extra"]["expr_norm"] == {"mode": "none", "mean": [0.0] * 51, "std": [1.0] * 51}
    # an imported run (here on mesh-fitted clips, which the import command itself refuses) edits without D
    refused = run_module(
        python_exe,
        python_env,
        "manipulator.ned",
        path,
        f"out={tmp_path}/imported",
        f"data_dir={processed_tiny}",
        check=False,
    )
    assert refused.returncode != 0 and "fitted with face model mesh" in refused.stderr
    nets = ned_file(tmp_path / "6_nets.pth", drop_d=True)
    states, emotions = read_ned_manipulator(tmp_path / "6_nets.pth")
    save_checkpoint(tmp_path / "imported/checkpoints", 0, ned_run_state(states, emotions, processed_tiny, path), 0)
    editor = Editor.load(tmp_path / "imported")
    clip = Clip(processed_tiny / read_clip_index(processed_tiny)["clips"][0]["dir"])
    expr = clip.face()["expr"]
    got = editor.edit(expr, editor.target_style("happy"), edit_from="none")  # the generator's output itself
    with torch.no_grad():  # NED's own nets (the transcription) on raw coefficients, as NED edits
        style = label_style(nets["mapping_network"].eval(), NED_EMOTIONS.index("happy"), 4)
        want = edit_expr(nets["generator"].eval(), expr, 10, style)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the evaluation scores expr_err with the dataset's statistics, not the run's identity normaliser
    job = Evaluator(Path("warp"), None, tmp_path / "eval", "test").jobs(str(tmp_path / "imported"), "m", "label")[0]
    dataset = Normaliser.from_index(processed_tiny)
    assert np.all(editor.norm.std == 1) and np.array_equal(job.inputs.norm.std, dataset.std)
