"""The licensed DECA/FLAME files: where they are expected, where users get them, and safe loaders.

Nothing here downloads anything. `DECA/data/` (git-ignored) is the default location; `SPFEM_DECA_DATA` or a
config value can point elsewhere. Third-party pickles never go through `pickle.load`: FLAME's
`generic_model.pkl` (Python 2 pickle with chumpy objects and a scipy sparse matrix) and DECA's
`landmark_embedding.npy` (a pickled dict, partly torch tensors) are read by restricted unpicklers that know
exactly the classes these files contain, turn chumpy/scipy objects into numpy arrays without importing
chumpy or scipy, and refuse every other global (so a crafted file cannot run code).
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import FormatError, UserError

DATA_DIR = Path(__file__).resolve().parent / "data"


def data_dir(configured: str | Path | None = None) -> Path:
    """The DECA data folder: the configured one, else $SPFEM_DECA_DATA, else DECA/data/."""
    if configured:
        return Path(configured)
    return Path(os.environ.get("SPFEM_DECA_DATA", DATA_DIR))


@dataclass(frozen=True)
class Asset:
    name: str
    what: str
    source: str
    required: bool = True  # False: optional (texture only)


ASSETS = {
    a.name: a
    for a in (
        Asset(
            "generic_model.pkl",
            "FLAME 2020 head model",
            "FLAME2020.zip at https://flame.is.tue.mpg.de (free registration)",
        ),
        Asset(
            "deca_model.tar",
            "DECA encoder/decoder weights",
            "the DECA release (https://github.com/yfeng95/DECA, fetch_data.sh; needs the FLAME registration)",
        ),
        Asset(
            "landmark_embedding.npy",
            "FLAME 68-landmark embedding",
            "the data/ folder of https://github.com/yfeng95/DECA",
        ),
        Asset(
            "FLAME_albedo_from_BFM.npz",
            "FLAME albedo (textures; not needed for NMFC/shape)",
            "converted from BFM 2017 with https://github.com/TimoBolkart/BFM_to_FLAME",
            required=False,
        ),
    )
}
REQUIRED = tuple(name for name, a in ASSETS.items() if a.required)


def missing_message(directory: Path, names: tuple[str, ...] | list[str]) -> str | None:
    """One message listing every missing file with its expected path and where to get it; None if all present."""
    missing = [n for n in names if not (directory / n).is_file()]
    if not missing:
        return None
    lines = [f"missing licensed DECA/FLAME file(s) ({len(missing)}); we never download them, place them yourself:"]
    for n in missing:
        lines.append(f"  - {directory / n}: {ASSETS[n].what}; get it from {ASSETS[n].source}")
    lines.append(
        "then check them with: python -m DECA.check_assets" + (f" --data {directory}" if directory != DATA_DIR else "")
    )
    return "\n".join(lines)


def require(directory: Path, names: tuple[str, ...] | list[str] = REQUIRED) -> None:
    msg = missing_message(directory, names)
    if msg:
        raise UserError(msg)


# ---------------------------------------------------------------------------------------------------
# Restricted unpicklers


class _ChumpyObject:
    """Stand-in for chumpy's `Ch`: keeps the pickled state; the array is state['x']."""

    def __setstate__(self, state):
        self.state = state

    def to_numpy(self) -> np.ndarray:
        if not isinstance(getattr(self, "state", None), dict) or "x" not in self.state:
            raise FormatError("a chumpy object without its array ('x')")
        return np.asarray(_to_array(self.state["x"]))


class _ChumpySelect(_ChumpyObject):
    """Stand-in for chumpy's `reordering.Select` (a slice of another Ch): a.x.ravel()[idxs] reshaped."""

    def to_numpy(self) -> np.ndarray:
        s = self.state
        base = _to_array(s["a"]).ravel()
        return base[np.asarray(s["idxs"]).ravel()].reshape(s.get("preferred_shape") or (-1,))


class _SparseMatrix:
    """Stand-in for scipy's csc/csr matrices: densified from (data, indices, indptr, shape)."""

    kind = "csc"

    def __setstate__(self, state):
        self.state = state

    def to_numpy(self) -> np.ndarray:
        s = self.state
        shape = tuple(s.get("_shape") or s.get("shape"))
        data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
        dense = np.zeros(shape, dtype=np.float64)
        for j in range(len(indptr) - 1):
            sl = slice(indptr[j], indptr[j + 1])
            if self.kind == "csc":
                dense[indices[sl], j] = data[sl]
            else:
                dense[j, indices[sl]] = data[sl]
        return dense


class _CsrMatrix(_SparseMatrix):
    kind = "csr"


def _numpy_global(name: str):
    import numpy.core.multiarray as multiarray

    return {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}[name]


_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}
_BUILTINS = {
    ("__builtin__", "set"): lambda: set,
    ("builtins", "set"): lambda: set,
    ("__builtin__", "frozenset"): lambda: frozenset,
    ("builtins", "frozenset"): lambda: frozenset,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
    ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
}
_FLAME = {
    ("chumpy.ch", "Ch"): lambda: _ChumpyObject,
    ("chumpy.reordering", "Select"): lambda: _ChumpySelect,
    ("scipy.sparse.csc", "csc_matrix"): lambda: _SparseMatrix,
    ("scipy.sparse._csc", "csc_matrix"): lambda: _SparseMatrix,
    ("scipy.sparse.csr", "csr_matrix"): lambda: _CsrMatrix,
    ("scipy.sparse._csr", "csr_matrix"): lambda: _CsrMatrix,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the listed (module, name) globals; anything else is refused before it is imported."""

    def __init__(self, file, allowed: dict, what: str):
        super().__init__(file, encoding="latin1")
        self.allowed, self.what = allowed, what

    def find_class(self, module: str, name: str):
        factory = self.allowed.get((module, name))
        if factory is None:
            raise FormatError(f"{self.what}: refusing to load {module}.{name} (not a class this file should contain)")
        return factory()


def _to_array(value):
    if isinstance(value, (_ChumpyObject, _SparseMatrix)):
        return value.to_numpy()
    return value


def load_flame_pickle(path: str | Path) -> dict[str, np.ndarray | str]:
    """FLAME's generic_model.pkl as plain numpy arrays (chumpy and sparse objects converted)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = RestrictedUnpickler(f, _NUMPY | _BUILTINS | _FLAME, str(path)).load()
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file gets one message
        raise FormatError(f"{path}: not a readable FLAME model pickle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: expected a dict of FLAME arrays, found {type(raw).__name__}")
    return {k: _to_array(v) for k, v in raw.items()}


def _load_torch_bytes(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _torch_globals() -> dict:
    import torch

    return {
        ("torch._utils", "_rebuild_tensor_v2"): lambda: torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): lambda: _load_torch_bytes,
    }


def load_landmark_embedding(path: str | Path) -> dict[str, np.ndarray]:
    """DECA's landmark_embedding.npy (a 0-d object array holding a dict; some values are torch tensors)."""
    from numpy.lib import format as npy_format

    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            header = npy_format._read_array_header(f, version)
            if header[2] != np.dtype(object):
                raise FormatError(f"{path}: expected a pickled object array, found dtype {header[2]}")
            obj = RestrictedUnpickler(f, _NUMPY | _BUILTINS | _torch_globals(), str(path)).load()
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{path}: not a readable landmark embedding ({exc.__class__.__name__}: {exc})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj[()]
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected a dict, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        out[k] = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
    return out
