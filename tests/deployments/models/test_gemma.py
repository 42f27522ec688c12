"""The Gemma conversion's one-parse GGUF reader (`_gguf_parsed_once`), on a small GGUF
file written here with the `gguf` package: same fields and tensors as the stock reader,
parsed once per file, and the stock reader back afterwards. The conversion itself runs
for real in tests/cluster (`serve run serve_config.yaml`)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from deployments.models.gemma import _gguf_parsed_once


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_string("general.name", "small")
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_uint32("gemma3.context_length", 128)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _fields(reader) -> dict:
    return {name: [part.tolist() for part in field.parts] for name, field in reader.fields.items()}


def test_same_fields_and_tensors_as_the_stock_reader(gguf_file: Path):
    stock = gguf.GGUFReader(gguf_file)
    with _gguf_parsed_once():
        ours = gguf.GGUFReader(gguf_file)
    assert _fields(ours) == _fields(stock)
    assert [t.name for t in ours.tensors] == ["token_embd.weight"]
    assert ours.tensors[0].data.tolist() == stock.tensors[0].data.tolist()
    # Read through a plain ndarray: no memmap bookkeeping per view.
    assert type(ours.data) is np.ndarray
    assert type(ours.tensors[0].data) is np.ndarray


def test_one_parse_per_file_and_the_stock_reader_back_after(gguf_file: Path, tmp_path: Path):
    original = gguf.GGUFReader
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf_file.read_bytes())
    with _gguf_parsed_once():
        first = gguf.GGUFReader(gguf_file)
        assert gguf.GGUFReader(str(gguf_file)) is first  # str or Path: one reader
        assert gguf.GGUFReader(other) is not first
    assert gguf.GGUFReader is original
    assert type(gguf.GGUFReader(gguf_file).data) is np.memmap


def test_the_stock_reader_is_back_after_an_error(gguf_file: Path):
    original = gguf.GGUFReader
    with pytest.raises(RuntimeError), _gguf_parsed_once():
        raise RuntimeError("conversion failed")
    assert gguf.GGUFReader is original
