"""TorchScript (pytorch_libtorch) and TensorFlow SavedModel (tensorflow_savedmodel) models.

Both frameworks are optional extras (`nomad-triton[torch]`, `nomad-triton[tensorflow]`): without
them the model is refused at load with a line naming the extra and the ONNX conversion, and the
other models still serve. Inputs are matched the way Triton's backends match them: TorchScript by
position (config order), SavedModel by the serving signature's input names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nomad_triton.server.model_repo import LoadedModel, RepositoryError

EXTRAS = {
    "torch": ("torch", "pytorch_libtorch", "torch.onnx.export(...) and platform onnxruntime_onnx"),
    "tensorflow": ("tensorflow", "tensorflow_savedmodel", "tf2onnx (python -m tf2onnx.convert --saved-model ...) "
                   "and platform onnxruntime_onnx"),
}


def _require(model: LoadedModel) -> Any:
    module, platform, convert = EXTRAS[model.kind or ""]
    try:
        return __import__(module)
    except ImportError:
        raise RepositoryError([
            f"{model.where}: platform: {platform} needs the optional '{module}' extra, which is not installed "
            f"(pip install 'nomad-triton[{module}]'), or convert the model to ONNX: {convert}"
        ]) from None


def _torch_instances(model: LoadedModel, torch: Any) -> dict[int, list[Callable[..., Any]]]:
    spec = model.spec
    out_names = [t.name for t in spec.outputs]
    device = f"cuda:{model.gpus[0]}" if model.instance_kind == "KIND_GPU" and model.gpus else "cpu"
    versions: dict[int, list[Callable[..., Any]]] = {}
    for version, path in model.versions.items():
        try:
            module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # torch raises RuntimeError subclasses for corrupt archives
            raise RepositoryError([f"{model.where}: version {version}: cannot load {path.name} as TorchScript: "
                                   f"{str(exc).splitlines()[0]}"]) from None

        def infer(batch: dict[str, np.ndarray], module: Any = module) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                args = [torch.from_numpy(np.ascontiguousarray(batch[t.name])).to(device) for t in spec.inputs]
                result = module(*args)
            result = result if isinstance(result, list | tuple) else [result]
            return {n: r.detach().cpu().numpy() for n, r in zip(out_names, result, strict=True)}

        versions[version] = [infer] * spec.instance_count
    return versions


def _tensorflow_instances(model: LoadedModel, tf: Any) -> dict[int, list[Callable[..., Any]]]:
    spec = model.spec
    versions: dict[int, list[Callable[..., Any]]] = {}
    for version, path in model.versions.items():
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except Exception as exc:  # tensorflow raises its own error types for bad folders
            raise RepositoryError([f"{model.where}: version {version}: cannot load {path.name} as a SavedModel "
                                   f"with a serving_default signature: {str(exc).splitlines()[0]}"]) from None
        have = set(fn.structured_input_signature[1])
        for i, t in enumerate(spec.inputs):
            if t.name not in have:
                raise RepositoryError([f"{model.where}: input[{i}].name: {t.name!r} is not an input of "
                                       f"{path.name}'s serving signature ({sorted(have)})"])

        def infer(batch: dict[str, np.ndarray], fn: Any = fn) -> dict[str, np.ndarray]:
            result = fn(**{k: tf.constant(v) for k, v in batch.items()})
            return {t.name: result[t.name].numpy() for t in spec.outputs}

        versions[version] = [infer] * spec.instance_count
    return versions


def framework_instances(model: LoadedModel) -> dict[int, list[Callable[..., Any]]]:
    """Instances per version for a torch or tensorflow model (RepositoryError if the extra is missing)."""
    framework = _require(model)
    if model.kind == "torch":
        return _torch_instances(model, framework)
    return _tensorflow_instances(model, framework)
