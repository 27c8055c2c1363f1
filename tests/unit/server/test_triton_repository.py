"""config.pbtxt + version folders -> model description; every bad input is one line naming file and field."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pytriton.proxy.types import Request

from nomad_triton.server.backends import prepare, prepare_all
from nomad_triton.server.model_repo import RepositoryError
from nomad_triton.server.repository import load_model, load_repository, load_repository_partial
from nomad_triton.server.versioned_store import private_name, rewrite

ROOT = Path(__file__).resolve().parents[3]
REPO = ROOT / "examples" / "triton-repo"

ONNX_CONFIG = (REPO / "linear_onnx" / "config.pbtxt").read_text()


def _copy(tmp_path: Path, model: str = "linear_onnx") -> Path:
    dst = tmp_path / model
    shutil.copytree(REPO / model, dst)
    return dst


def _error(folder: Path, **kw: bool) -> str:
    with pytest.raises(RepositoryError) as err:
        prepare(load_model(folder, **kw))
    assert len(err.value.lines) == 1, err.value.lines
    return err.value.lines[0]


def test_example_repository_maps_to_model_descriptions() -> None:
    models = {m.spec.name: m for m in load_repository(REPO)}
    onnx, add_sub = models["linear_onnx"], models["add_sub"]
    assert onnx.kind == "onnx" and sorted(onnx.versions) == [1, 2] and onnx.where == REPO / "linear_onnx" / "config.pbtxt"
    assert onnx.spec.max_batch_size == 64 and onnx.spec.dynamic_batching is not None
    assert onnx.spec.dynamic_batching.preferred_batch_sizes == [16, 32]
    assert onnx.spec.dynamic_batching.max_queue_delay_us == 500
    assert [(t.name, t.dtype, t.shape) for t in onnx.spec.inputs] == [("x", "float32", [16])]
    assert add_sub.kind == "triton_python" and list(add_sub.versions) == [1]
    assert add_sub.spec.max_batch_size == 0 and add_sub.config_json["output"][0]["dims"] == [4]


def test_versions_answer_with_their_own_weights() -> None:
    import examples.build_onnx_model as gen
    import examples.build_triton_repo as repo

    prepared = {p.model.spec.name: p for p in prepare_all(load_repository(REPO))}
    x = np.random.default_rng(3).standard_normal((3, 16)).astype(np.float32)
    for version, seed in repo.VERSION_SEEDS.items():
        w, b = gen.weights(seed)
        got = prepared["linear_onnx"].versions[version][0]({"x": x})["y"]
        np.testing.assert_allclose(got, np.maximum(x @ w + b, 0), rtol=1e-5)
    assert prepared["linear_onnx"].instances is prepared["linear_onnx"].versions[2]  # default = highest


def test_checked_in_triton_repo_onnx_is_what_the_script_builds(tmp_path: Path) -> None:
    import examples.build_triton_repo as repo

    for path in repo.write(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (REPO / rel).read_bytes(), rel


def test_python_backend_model_runs_unchanged_through_the_shim() -> None:
    prepared = {p.model.spec.name: p for p in prepare_all(load_repository(REPO))}
    add_sub = prepared["add_sub"]
    assert add_sub.batched is False
    a, b = np.arange(4, dtype=np.float32), np.full(4, 0.5, np.float32)
    out = add_sub.instances[0]([Request(data={"INPUT0": a, "INPUT1": b}), Request(data={"INPUT0": b, "INPUT1": a})])
    np.testing.assert_array_equal(out[0]["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out[1]["OUTPUT1"], b - a)


@pytest.mark.parametrize(
    ("policy", "folders", "want"),
    [
        ("", [1, 2, 3], [3]),
        ("version_policy: { latest { num_versions: 2 } }", [1, 2, 3], [2, 3]),
        ("version_policy: { all { } }", [1, 3], [1, 3]),
        ("version_policy: { specific { versions: [1, 3] } }", [1, 2, 3], [1, 3]),
    ],
)
def test_version_policy(tmp_path: Path, policy: str, folders: list[int], want: list[int]) -> None:
    folder = tmp_path / "linear_onnx"
    folder.mkdir()
    (folder / "config.pbtxt").write_text(ONNX_CONFIG.replace("version_policy: { all { } }", policy))
    for v in folders:
        (folder / str(v)).mkdir()
        shutil.copy(REPO / "linear_onnx" / "1" / "model.onnx", folder / str(v) / "model.onnx")
    (folder / "not-a-version").mkdir()
    assert sorted(load_model(folder).versions) == want


def _edit(folder: Path, old: str, new: str) -> Path:
    path = folder / "config.pbtxt"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    return path


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = _edit(folder, "max_batch_size: 64", "max_batch_size: 64 }")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "max_batch_size" in t)
    msg = _error(folder)
    assert msg.startswith(f"{path}:{line}:") and "syntax error" in msg, msg


def test_unknown_field(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    path = _edit(folder, "max_batch_size: 64", "max_batch_size: 64\nmax_batch: 3")
    msg = _error(folder)
    assert msg.startswith(f"{path}:6:1: max_batch: unknown field"), msg


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("dims: [ 16 ]", "dims: [ 16 ]\n    reshape: { shape: [ 3, 5 ] }",
         "input[0].reshape: shape [3, 5] holds 15 elements but dims [16] hold 16"),
        ("data_type: TYPE_FP32\n    dims: [ 4 ]", "data_type: TYPE_BF16\n    dims: [ 4 ]",
         "output[0].data_type: TYPE_BF16 cannot be produced"),
        ("version_policy: { all { } }", "version_policy: { specific { versions: [2, 7] } }",
         "version_policy.specific.versions: version(s) [7] have no folder"),
        ('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"',
         "platform: model 'linear_onnx' uses 'tensorrt_plan', which this server cannot run"),
        ('name: "linear_onnx"', 'name: "other"', "name: 'other' does not match its folder name 'linear_onnx'"),
        ('platform: "onnxruntime_onnx"', 'platform: "onnxruntime_onnx"\nbackend: "python"',
         "backend: 'python' contradicts platform 'onnxruntime_onnx'; set one of them"),
        ("kind: KIND_CPU", "kind: KIND_GPU\n    gpus: [ 0 ]", "instance_group[0].kind: KIND_GPU but this machine has no"),
        ('name: "x"', 'name: "input"', "input[0].name: 'input' is not in 1/model.onnx (['x'])"),
        ("data_type: TYPE_FP32\n    dims: [ 16 ]", "data_type: TYPE_FP64\n    dims: [ 16 ]",
         "input[0].data_type: config says float64, 1/model.onnx has float32"),
        ("max_batch_size: 64", 'max_batch_size: 64\nbatch_input [{ kind: BATCH_ELEMENT_COUNT target_name: "n" }]',
         "batch_input: batch inputs are not supported"),
        ("preferred_batch_size: [ 16, 32 ]", "preferred_batch_size: [ 16, 128 ]",
         "dynamic_batching.preferred_batch_size [128] exceed max_batch_size"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_field(tmp_path: Path, old: str, new: str, expect: str) -> None:
    folder = _copy(tmp_path)
    path = _edit(folder, old, new)
    msg = _error(folder)
    assert msg.startswith(f"{path}: ") and expect in msg, msg


def test_version_folder_without_model_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "2" / "model.onnx").unlink()
    msg = _error(folder)
    assert msg == f"{folder / '2'}: no model file 'model.onnx' for version 2 (set by default_model_filename or the platform)"


def test_default_model_filename_is_honoured(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    for v in ("1", "2"):
        (folder / v / "model.onnx").rename(folder / v / "linear.onnx")
    _edit(folder, "max_batch_size: 64", 'max_batch_size: 64\ndefault_model_filename: "linear.onnx"')
    assert load_model(folder).versions[2] == folder / "2" / "linear.onnx"


def test_kind_gpu_falls_back_to_cpu_only_when_allowed(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    _edit(folder, "kind: KIND_CPU", "kind: KIND_GPU")
    model = load_model(folder, allow_cpu_fallback=True)
    assert model.instance_kind == "KIND_CPU" and any("--allow-cpu-fallback" in w for w in model.warnings)


def test_ignored_fields_warn(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    _edit(folder, "max_batch_size: 64", "max_batch_size: 64\nmodel_warmup [{ name: \"w\" batch_size: 1 }]")
    assert any("model_warmup: ignored" in w for w in load_model(folder).warnings)


def test_initialize_that_raises_is_one_line_and_a_logged_traceback(tmp_path: Path, caplog) -> None:
    folder = _copy(tmp_path, "add_sub")
    model_py = folder / "1" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "    def initialize(self, args):\n", "    def initialize(self, args):\n        raise ValueError('no weights')\n"))
    msg = _error(folder)
    assert msg == f"{model_py}: initialize() raised ValueError: no weights (traceback in the log)"
    assert "Traceback" in caplog.text and "no weights" in caplog.text


def test_torch_and_tensorflow_without_their_extra_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("torch", "tensorflow"):  # as in a venv without the extras (CI installs them)
        monkeypatch.setitem(sys.modules, module, None)
    for platform, file, extra in (("pytorch_libtorch", "model.pt", "torch"),
                                  ("tensorflow_savedmodel", "model.savedmodel", "tensorflow")):
        folder = tmp_path / f"m_{extra}"
        (folder / "1" / file).mkdir(parents=True)
        (folder / "config.pbtxt").write_text(
            f'platform: "{platform}"\nmax_batch_size: 8\n'
            'input [{ name: "x" data_type: TYPE_FP32 dims: [2] }]\noutput [{ name: "y" data_type: TYPE_FP32 dims: [2] }]\n'
        )
        msg = _error(folder)
        assert f"platform: {platform} needs the optional '{extra}' extra" in msg, msg
        assert f"nomad-triton[{extra}]" in msg and "ONNX" in msg


def test_partial_load_keeps_good_models_and_names_broken_ones(tmp_path: Path) -> None:
    good = _copy(tmp_path)
    bad = _copy(tmp_path, "add_sub")
    _edit(bad, 'backend: "python"', 'backend: "tensorrt"')
    models, broken = load_repository_partial(tmp_path)
    assert [m.folder for m in models] == [good] and list(broken) == ["add_sub"]
    with pytest.raises(RepositoryError):
        load_repository(tmp_path)


def test_both_description_files_in_one_folder_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "model.toml").write_text("")
    with pytest.raises(RepositoryError, match="holds both model.toml and config.pbtxt"):
        load_model(folder)


def test_store_rewrite_gives_each_version_its_private_sockets(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for v in (1, 2):
        folder = store / private_name("m", v) / str(v)
        folder.mkdir(parents=True)
        (folder / "model.py").write_text("# pytriton proxy\n")
        (store / private_name("m", v) / "config.pbtxt").write_text(f'name: "{private_name("m", v)}"\nbackend: "python"\n')
    rewrite(store, {"m": [1, 2]}, {"broken": "bad.pbtxt: platform: nope"})
    assert sorted(p.name for p in store.iterdir()) == ["broken", "m"]
    config = (store / "m" / "config.pbtxt").read_text()
    assert 'name: "m"' in config and "versions: 1" in config and "versions: 2" in config
    wrapper = (store / "m" / "2" / "model.py").read_text()
    assert "_PRIVATE = 'm__nt_v2'" in wrapper and (store / "m" / "2" / "pytriton_proxy.py").exists()
    assert "bad.pbtxt: platform: nope" in (store / "broken" / "1" / "model.py").read_text()


def test_kind_gpu_pins_existing_devices_and_refuses_missing_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nomad_triton.probe import gpu

    two = gpu.GpuReport(available=True, gpus=[gpu.GpuStat(i, "H100", 0.0, 0, 80 << 30) for i in (0, 1)])
    monkeypatch.setattr(gpu, "read_gpus", lambda: two)
    folder = _copy(tmp_path)
    path = _edit(folder, "    count: 1\n    kind: KIND_CPU", "    count: 2\n    kind: KIND_GPU\n    gpus: [ 1 ]")
    model = load_model(folder)
    assert model.instance_kind == "KIND_GPU" and model.gpus == [1] and model.spec.instance_count == 2
    path.write_text(path.read_text().replace("gpus: [ 1 ]", "gpus: [ 1, 5 ]"))
    with pytest.raises(RepositoryError) as err:
        load_model(folder)
    assert err.value.lines == [f"{path}: instance_group[0].gpus: device(s) [5] do not exist (this machine has GPU(s) [0, 1])"]


def test_onnx_providers_follow_the_instance_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from nomad_triton.server.backends import _onnx_providers

    assert _onnx_providers("KIND_GPU", 1) == ["CPUExecutionProvider"]  # this build/machine: no CUDA
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert _onnx_providers("KIND_GPU", 1) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert _onnx_providers("KIND_AUTO") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert _onnx_providers("KIND_CPU") == ["CPUExecutionProvider"]


def test_instance_kind_defaults_like_triton(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    assert load_model(folder).instance_kind == "KIND_CPU"  # the example pins KIND_CPU
    path = folder / "config.pbtxt"
    text = path.read_text()
    path.write_text(text[: text.index("instance_group")])
    assert load_model(folder).instance_kind == "KIND_AUTO"  # no instance_group: a GPU when there is one


def test_python_model_error_responses_and_wrong_counts_fail_the_batch(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "add_sub")
    (folder / "1" / "model.py").write_text(
        "import triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        first = pb_utils.get_input_tensor_by_name(requests[0], 'INPUT0').as_numpy()\n"
        "        if first[0] < 0:\n"
        "            return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError('negative'))]\n"
        "        return []\n"
    )
    [infer] = prepare(load_model(folder)).instances
    neg = Request(data={"INPUT0": -np.ones(4, np.float32), "INPUT1": np.ones(4, np.float32)})
    with pytest.raises(RuntimeError, match="model add_sub v1: negative"):
        infer([neg])
    pos = Request(data={"INPUT0": np.ones(4, np.float32), "INPUT1": np.ones(4, np.float32)})
    with pytest.raises(RuntimeError, match=r"execute\(\) returned 0 responses for 1 requests"):
        infer([pos])


def test_model_config_json_is_what_triton_passes(tmp_path: Path) -> None:
    model = load_model(_copy(tmp_path, "add_sub"))
    cfg = model.config_json
    assert cfg["name"] == "add_sub" and cfg["backend"] == "python" and cfg["max_batch_size"] == 0
    assert [(t["name"], t["data_type"], t["dims"]) for t in cfg["input"]] == [
        ("INPUT0", "TYPE_FP32", [4]), ("INPUT1", "TYPE_FP32", [4])]
