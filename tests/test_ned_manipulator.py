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
from manipulator.data import Normaliser
from manipulator.edit import Editor
from manipulator.editing import edit_expr, label_style
from manipulator.models import build_manipulator
from manipulator.ned import (
    NED_EMOTIONS,
    NED_NETS,
    is_ned_manipulator,
    ned_key,
    ned_run_state,
    our_key,
    read_ned_manipulator,
)


def ned_file(path, nets=None, drop_d=False, edit=None):
    """Our `ned` nets saved the way NED's CheckpointIO saves its nets (NED's key names)."""
    torch.manual_seed(0)
    nets = nets or build_manipulator(51, len(NED_EMOTIONS), "ned", residual=False)
    out = {}
    for ned_name, name in NED_NETS.items():
        if drop_d and name == "discriminator":
            continue
        out[ned_name] = {ned_key(name, k): v.clone() for k, v in nets[name].state_dict().items()}
    if edit:
        edit(out)
    torch.save(out, path)
    return nets


def test_key_names_follow_neds_networks():
    # NED's names (foivospar/NED manipulator/models/networks.py) for a few parameters of each net
    assert ned_key("generator", "pre.0.weight") == "seq1.0.weight"
    assert ned_key("generator", "lstm.weight_hh_l1_reverse") == "LSTM.weight_hh_l1_reverse"
    assert ned_key("generator", "post.4.bias") == "seq2.4.bias"
    assert ned_key("style", "trunk.post.4.weight") == "seq2.4.weight"
    assert ned_key("discriminator", "trunk.lstm.bias_ih_l0") == "LSTM.bias_ih_l0"
    assert ned_key("mapping", "heads.6.2.weight") == "unshared.6.2.weight"
    assert ned_key("mapping", "shared.4.bias") == "shared.4.bias"
    nets = build_manipulator(51, 7, "ned")
    for name, net in nets.items():
        for key in net.state_dict():
            assert our_key(name, ned_key(name, key)) == key


def test_a_ned_file_loads_strictly_and_computes_the_same(tmp_path):
    path = tmp_path / "20_nets_finetuned.pth"
    original = ned_file(path)
    assert is_ned_manipulator(path) and not is_ned_manipulator(tmp_path)
    states, emotions = read_ned_manipulator(path)
    assert emotions == NED_EMOTIONS
    fresh = build_manipulator(51, 7, "ned", residual=False)
    for name, state in states.items():
        fresh[name].load_state_dict(state)  # strict
    x, y, z = torch.randn(2, 10, 51), torch.tensor([1, 4]), torch.randn(2, 4)
    with torch.no_grad():
        s = original["mapping"](z, y)
        assert torch.equal(fresh["mapping"](z, y), s)
        assert torch.equal(fresh["generator"](x, s), original["generator"](x, s))
        assert torch.equal(fresh["style"](x), original["style"](x))
        assert torch.equal(fresh["discriminator"](x, y), original["discriminator"](x, y))


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
    assert ckpt["extra"]["expr_mean"] == [0.0] * 51 and ckpt["extra"]["expr_std"] == [1.0] * 51
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
    got = editor.edit(expr, editor.target_style("happy"))
    style = label_style(nets["mapping"].eval(), NED_EMOTIONS.index("happy"), 4)
    want = edit_expr(nets["generator"].eval(), expr, 10, style)  # raw coefficients, as NED
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the evaluation scores expr_err with the dataset's statistics, not the run's identity normaliser
    job = Evaluator(Path("warp"), None, tmp_path / "eval", "test").jobs(str(tmp_path / "imported"), "m", "label")[0]
    dataset = Normaliser.from_index(processed_tiny)
    assert np.all(editor.norm.std == 1) and np.array_equal(job.inputs.norm.std, dataset.std)
