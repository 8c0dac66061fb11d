"""Reading checkpoint files into flat {key: numpy array} dicts, without executing their code.

- `.safetensors`: parsed here (header + raw buffers), so bfloat16 files load without torch;
- `.pth` / `.pt` / `.bin`: `torch.load(weights_only=True)` only, never arbitrary unpickling;
- `.npz`: big_vision / vision_transformer checkpoints ("/"-separated flax paths);
- a Hugging Face folder: config.json + model.safetensors (or pytorch_model.bin), with
  preprocessor_config.json when present.
"""

import json
import os

import ml_dtypes
import numpy as np

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file (floating point ones as float32)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], _SAFETENSORS_DTYPES[info["dtype"]])
        array = array.reshape(info["shape"])
        out[key] = array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) or \
            array.dtype == ml_dtypes.bfloat16 else array.copy()
    return out


def read_torch(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict, loaded with weights_only=True (tensors and containers only)."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch); or convert it to "
                          f".safetensors, which jaxcls reads without torch") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach()
            out[key.removeprefix("module.")] = (value.float() if value.is_floating_point()
                                                else value).numpy()
    return out


def read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key].astype(np.float32) if f[key].dtype.kind == "f" else f[key]
                for key in f.files}


def read_tensors(path: str) -> dict[str, np.ndarray]:
    """Flat tensors of a weights file or Hugging Face folder, by file type."""
    if os.path.isdir(path):
        for name in HF_WEIGHT_FILES:
            if os.path.exists(os.path.join(path, name)):
                return read_tensors(os.path.join(path, name))
        raise FileNotFoundError(f"{path} holds none of {HF_WEIGHT_FILES}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file {path}")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith((".pth", ".pt", ".bin")):
        return read_torch(path)
    if path.endswith(".npz"):
        return read_npz(path)
    raise ValueError(f"{path}: unknown weights file type; use .safetensors, .pth/.pt/.bin, .npz "
                     f"or a Hugging Face folder")


def read_json(folder: str, name: str) -> dict:
    """folder/name parsed, or {} when there is no such file."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
