"""Entry-point and ONNX preparation: failures surface as repository errors before Triton starts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nomad_triton.server.app import model_config
from nomad_triton.server.backends import check_outputs, prepare, prepare_all
from nomad_triton.server.drain import InFlight
from nomad_triton.server.model_repo import RepositoryError
from nomad_triton.server.repository import load_model, load_repository

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "models"

TOML = """
max_batch_size = 4
entrypoint = "{entry}"
[[inputs]]
name = "x"
dtype = "float32"
shape = [2]
[[outputs]]
name = "y"
dtype = "float32"
shape = [2]
{extra}
"""


def _model(tmp_path: Path, name: str, code: str, entry: str = "impl:run", extra: str = ""):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.toml").write_text(TOML.format(entry=entry, extra=extra))
    (folder / f"{entry.split(':')[0]}.py").write_text(code)
    return load_model(folder)


def test_examples_compute_expected_values() -> None:
    prepared = {p.model.spec.name: p for p in prepare_all(load_repository(EXAMPLES))}
    x = np.arange(32, dtype=np.float32).reshape(2, 16) / 32.0
    mlp_y = prepared["mlp"].instances[0]({"x": x})["y"]
    assert mlp_y.shape == (2, 4) and mlp_y.dtype == np.float32
    w_b = __import__("examples.build_onnx_model", fromlist=["weights"]).weights()
    onnx_y = prepared["relu_onnx"].instances[0]({"x": x})["y"]
    np.testing.assert_allclose(onnx_y, np.maximum(x @ w_b[0] + w_b[1], 0), rtol=1e-5)
    assert len(prepared["relu_onnx"].instances) == 1


def test_same_module_name_in_two_models_does_not_collide(tmp_path: Path) -> None:
    a = prepare(_model(tmp_path, "a", "def run(b):\n    return {'y': b['x'] + 1}\n"))
    b = prepare(_model(tmp_path, "b", "def run(b):\n    return {'y': b['x'] * 10}\n"))
    x = np.ones((1, 2), np.float32)
    assert a.instances[0]({"x": x})["y"][0, 0] == 2 and b.instances[0]({"x": x})["y"][0, 0] == 10


def test_parameters_are_keyword_arguments(tmp_path: Path) -> None:
    code = "def run(b, scale=1.0):\n    return {'y': b['x'] * scale}\n"
    m = prepare(_model(tmp_path, "p", code, extra="[parameters]\nscale = 3.0"))
    assert m.instances[0]({"x": np.ones((1, 2), np.float32)})["y"][0, 1] == 3.0
    with pytest.raises(RepositoryError, match=r"q/model.toml: parameters: run\(\) does not accept them"):
        prepare(_model(tmp_path, "q", code, extra="[parameters]\nbogus = 1"))


@pytest.mark.parametrize(
    ("code", "entry", "message"),
    [
        ("raise RuntimeError('boom')\n", "impl:run", "entrypoint: cannot import 'impl': boom"),
        ("x = 1\n", "impl:run", "entrypoint: 'impl' has no callable 'run'"),
        ("", "other:run", "entrypoint: cannot import 'other': no other.py"),
    ],
)
def test_entrypoint_failures(tmp_path: Path, code: str, entry: str, message: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.toml").write_text(TOML.format(entry=entry, extra=""))
    (folder / "impl.py").write_text(code)
    with pytest.raises(RepositoryError) as err:
        prepare(load_model(folder))
    assert err.value.lines[0].startswith(f"{folder / 'model.toml'}: {message}"), err.value.lines


def test_onnx_io_must_match_declaration(tmp_path: Path) -> None:
    folder = tmp_path / "o"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((EXAMPLES / "relu_onnx" / "model.onnx").read_bytes())
    text = (EXAMPLES / "relu_onnx" / "model.toml").read_text().replace('name = "x"', 'name = "input"')
    (folder / "model.toml").write_text(text)
    with pytest.raises(RepositoryError, match=r"o/model.toml: inputs.0.name: 'input' is not in model.onnx"):
        prepare(load_model(folder))
    (folder / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(RepositoryError, match=r"o/model.toml: onnx: cannot load 'model.onnx'"):
        prepare(load_model(folder))


def test_check_outputs_casts_and_rejects() -> None:
    model = load_repository(EXAMPLES)[0]
    out = check_outputs(model, {"y": np.zeros((1, 4), np.float64)})
    assert out["y"].dtype == np.float32
    with pytest.raises(KeyError, match="did not return outputs"):
        check_outputs(model, {"z": 1})
    with pytest.raises(TypeError, match="returned list"):
        check_outputs(model, [])


def test_model_config_batching() -> None:
    mlp = load_model(EXAMPLES / "mlp")
    cfg = model_config(mlp)
    assert cfg.batching and cfg.max_batch_size == 64
    assert cfg.batcher.preferred_batch_size == [16, 32, 64] and cfg.batcher.max_queue_delay_microseconds == 1000
    unbatched = mlp.model_copy(update={"spec": mlp.spec.model_copy(update={"max_batch_size": 0,
                                                                           "dynamic_batching": None})})
    assert model_config(unbatched).batching is False


def test_inflight_wait_idle_has_a_deadline() -> None:
    inflight = InFlight()
    assert inflight.wait_idle(time.monotonic())
    release = threading.Event()

    def busy() -> None:
        with inflight:
            release.wait(5)

    t = threading.Thread(target=busy)
    t.start()
    while inflight.count == 0:
        time.sleep(0.001)
    assert not inflight.wait_idle(time.monotonic() + 0.05)
    threading.Timer(0.05, release.set).start()
    assert inflight.wait_idle(time.monotonic() + 5)
    t.join(5)


def test_checked_in_onnx_is_what_the_generator_builds(tmp_path: Path) -> None:
    gen = __import__("examples.build_onnx_model", fromlist=["main"])
    assert gen.main(["--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").read_bytes() == (EXAMPLES / "relu_onnx" / "model.onnx").read_bytes()
