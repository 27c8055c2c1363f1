"""model.toml validation: every bad folder yields `<file>: <field>: <reason>`, all folders checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_triton.server.model_repo import RepositoryError
from nomad_triton.server.repository import load_model, load_repository

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "models"

GOOD = """
max_batch_size = 8
entrypoint = "model:infer"
[dynamic_batching]
preferred_batch_sizes = [4, 8]
max_queue_delay_us = 100
[[inputs]]
name = "x"
dtype = "float32"
shape = [16]
[[outputs]]
name = "y"
dtype = "float32"
shape = [4]
"""


def _folder(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text(text)
    return folder


def test_examples_validate() -> None:
    models = {m.spec.name: m.spec for m in load_repository(EXAMPLES)}
    assert set(models) == {"mlp", "relu_onnx"}
    assert models["mlp"].backend == "python" and models["relu_onnx"].backend == "onnx"
    assert models["mlp"].dynamic_batching is not None
    assert models["mlp"].dynamic_batching.preferred_batch_sizes == [16, 32, 64]


def test_name_defaults_to_folder(tmp_path: Path) -> None:
    model = load_model(_folder(tmp_path, "tiny-1", GOOD))
    assert model.spec.name == "tiny-1" and model.spec.version == 1 and model.spec.instance_count == 1


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (('dtype = "float32"\nshape = [16]', 'dtype = "float128"\nshape = [16]'),
         "inputs.0.dtype: unsupported dtype 'float128'"),
        (("shape = [16]", "shape = [0]"), "inputs.0.shape: dimension 0 must be positive or -1"),
        (('entrypoint = "model:infer"', 'entrypoint = "model.infer"'), "entrypoint: 'model.infer' is not of"),
        (('entrypoint = "model:infer"', 'entrypoint = "model:infer"\nonnx = "m.onnx"'),
         "(root): set exactly one of 'entrypoint' or 'onnx'"),
        (("max_batch_size = 8", "max_batch_size = 2"), "exceed max_batch_size"),
        (("max_batch_size = 8", "max_batch_size = 8\ncolour = 1"), "colour: unknown field"),
        (("max_batch_size = 8", "max_batch_size = -1"), "max_batch_size: Input should be greater than or equal"),
        (('name = "y"\ndtype = "float32"', 'name = "y"'), "outputs.0.dtype: required field is missing"),
        (("[[outputs]]", '[[inputs]]\nname = "x"\ndtype = "int8"\nshape = [1]\n[[outputs]]'),
         "(root): duplicate tensor names ['x']"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, replace: tuple[str, str], expected: str) -> None:
    old, new = replace
    assert old in GOOD
    folder = _folder(tmp_path, "bad", GOOD.replace(old, new, 1))
    with pytest.raises(RepositoryError) as err:
        load_model(folder)
    line = err.value.lines[0]
    assert line.startswith(f"{folder / 'model.toml'}: "), line
    assert expected in line, line


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    _folder(tmp_path, "a_broken", "max_batch_size = [")
    (tmp_path / "b_empty").mkdir()
    _folder(tmp_path, "c_ok", GOOD)
    with pytest.raises(RepositoryError) as err:
        load_repository(tmp_path)
    lines = err.value.lines
    assert len(lines) == 2, lines  # both problems reported together; the good folder is not enough
    assert lines[0].startswith(f"{tmp_path / 'a_broken' / 'model.toml'}: invalid TOML")
    assert lines[1] == f"{tmp_path / 'b_empty'}: missing model.toml or config.pbtxt"


def test_duplicate_names_and_missing_onnx(tmp_path: Path) -> None:
    _folder(tmp_path, "one", 'name = "same"\n' + GOOD)
    _folder(tmp_path, "two", 'name = "same"\n' + GOOD)
    _folder(tmp_path, "three", GOOD.replace('entrypoint = "model:infer"', 'onnx = "missing.onnx"'))
    with pytest.raises(RepositoryError) as err:
        load_repository(tmp_path)
    text = str(err.value)
    assert "three/model.toml: onnx: file not found" in text
    assert "two/model.toml: name: 'same' already used by" in text


def test_onnx_path_must_stay_inside_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "esc", GOOD.replace('entrypoint = "model:infer"', 'onnx = "../x.onnx"'))
    with pytest.raises(RepositoryError, match="onnx: '../x.onnx' must be a path inside the model folder"):
        load_model(folder)


def test_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no model folders found"):
        load_repository(tmp_path)
    with pytest.raises(RepositoryError, match="is not a directory"):
        load_repository(tmp_path / "nope")
