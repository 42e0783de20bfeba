"""Checkpoint I/O: hashing while writing, streamed safetensors, the directory commit protocol."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from dsm5_hpo.checkpointing import io as checkpoint_io
from dsm5_hpo.checkpointing.io import (
    FileDigest,
    HashingWriter,
    checkpoint_digest,
    commit_directory,
    delete_directory,
    make_staging_dir,
    quarantine_directory,
    remove_stale_staging,
    write_bytes_hashed,
)
from dsm5_hpo.checkpointing.tensor_io import torch_save_hashed, write_safetensors_streaming
from dsm5_hpo.storage.atomic import sha256_file


def every_dtype() -> dict[str, torch.Tensor]:
    """One tensor per supported dtype, plus a 0-d, an empty and a NaN-carrying tensor."""
    torch.manual_seed(0)
    base = torch.randn(3, 5)
    tensors = {
        "f32": base,
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(-6, 6).reshape(3, 4),
        "i32": torch.arange(7, dtype=torch.int32),
        "i16": torch.arange(5, dtype=torch.int16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "u16": torch.tensor([0, 65535], dtype=torch.uint16),
        "u32": torch.tensor([0, 2**32 - 1], dtype=torch.uint32),
        "u64": torch.tensor([0, 2**63], dtype=torch.uint64),
        "bool": torch.tensor([True, False, True]),
        "f8_e4m3": base.to(torch.float8_e4m3fn),
        "f8_e5m2": base.to(torch.float8_e5m2),
        "scalar": torch.tensor(2.5),
        "scalar_i64": torch.tensor(7),
        "empty": torch.empty(0, 4),
        "empty_bf16": torch.empty(2, 0, dtype=torch.bfloat16),
        "nan": torch.tensor([float("nan"), float("inf"), -0.0]),
    }
    return tensors


def raw_bytes(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def assert_bit_identical(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert raw_bytes(loaded[name]) == raw_bytes(tensor), name  # bit-identical, NaN and -0.0 included


# ---------------------------------------------------------------------------- HashingWriter


def test_hashing_writer_hashes_exactly_what_it_writes(tmp_path: Path) -> None:
    pieces = [b"abc", bytearray(b"\x00" * 10), memoryview(b"xyz"), np.arange(6, dtype=np.float32).data, b""]
    path = tmp_path / "file.bin"
    with HashingWriter(path.open("wb")) as writer:
        for piece in pieces:
            assert writer.write(piece) == memoryview(piece).nbytes
        writer.sync()
        digest = writer.digest()
        assert writer.tell() == digest.bytes
    content = path.read_bytes()
    assert digest == FileDigest(hashlib.sha256(content).hexdigest(), len(content))
    assert content == b"".join(bytes(memoryview(p).cast("B")) for p in pieces)


def test_large_writes_are_chunked_and_hashed_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_io, "_CHUNK_BYTES", 3 << 20)  # 10 MiB -> 4 chunks on the worker thread
    data = np.random.default_rng(0).integers(0, 256, 10 << 20, dtype=np.uint8)
    path = tmp_path / "big.bin"
    with HashingWriter(path.open("wb")) as writer:
        writer.write(b"head")
        writer.write(data.data)
        assert writer._pool is not None  # the parallel path really ran
        digest = writer.digest()
    assert digest.sha256 == sha256_file(path)
    assert digest.bytes == 4 + data.nbytes


def test_short_writes_of_an_unbuffered_file_are_completed(tmp_path: Path) -> None:
    class Short(io.BytesIO):
        def write(self, data: object) -> int:
            return super().write(memoryview(data)[:3000])  # type: ignore[arg-type]

    target = Short()
    writer = HashingWriter(target)
    writer.write(b"0123456789")
    writer.write(bytes(range(256)) * 5000)
    assert target.getvalue() == b"0123456789" + bytes(range(256)) * 5000
    assert writer.digest().sha256 == hashlib.sha256(target.getvalue()).hexdigest()


def test_a_failing_write_propagates_after_the_hash_finished(tmp_path: Path) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    writer = HashingWriter(FullDisk())
    with pytest.raises(OSError, match="No space left"):
        writer.write(bytes(2 << 20))
    writer.close()  # no hashing thread left running


def test_torch_save_through_the_writer_loads_weights_only(tmp_path: Path) -> None:
    state = {"w": torch.randn(300, 300), "step": 3, "nested": [1.5, None, ("a", True)]}
    path = tmp_path / "state.pt"
    digest = torch_save_hashed(state, path)
    assert digest == FileDigest(sha256_file(path), path.stat().st_size)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["nested"] == [1.5, None, ("a", True)]


def test_hashed_writes_never_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x"
    assert write_bytes_hashed(path, b"one") == FileDigest(hashlib.sha256(b"one").hexdigest(), 3)
    with pytest.raises(FileExistsError):
        write_bytes_hashed(path, b"two")
    with pytest.raises(FileExistsError):
        torch_save_hashed({}, path)
    assert path.read_bytes() == b"one"


# ---------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_streamed_safetensors_are_byte_identical_to_safetensors_own(
    tmp_path: Path, metadata: dict[str, str] | None
) -> None:
    tensors = every_dtype()
    path = tmp_path / "model.safetensors"
    digest = write_safetensors_streaming(tensors, path, metadata)
    assert path.read_bytes() == safetensors.torch.save(tensors, metadata=metadata)
    assert digest == FileDigest(sha256_file(path), path.stat().st_size)
    assert_bit_identical(safetensors.torch.load_file(path), tensors)


def test_metadata_and_header_padding(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors_streaming({"a": torch.ones(1)}, path, {"z": "1", "a": "2", "ü": "é"})
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"z": "1", "a": "2", "ü": "é"}
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_size % 8 == 0


def test_empty_state(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    write_safetensors_streaming({}, path)
    assert path.read_bytes() == safetensors.torch.save({})
    assert safetensors.torch.load_file(path) == {}


def test_shared_and_non_contiguous_tensors_are_stored_in_full_under_every_name(tmp_path: Path) -> None:
    """Tied weights and views are written once per name (no clone in memory, no name dropped)."""
    weight = torch.randn(4, 6)
    tensors = {
        "embeddings.weight": weight,
        "lm_head.weight": weight,  # tied: the same tensor under two names
        "row": weight[1],  # a view into the same storage, at an offset
        "transposed": weight.t(),  # not contiguous
        "strided": weight[:, ::2],
    }
    tied = {name: tensors[name] for name in ("embeddings.weight", "lm_head.weight")}
    with pytest.raises(RuntimeError, match="share memory"):  # what safetensors' own save_file does
        safetensors.torch.save_file(tied, tmp_path / "refused.safetensors")
    path = tmp_path / "shared.safetensors"
    write_safetensors_streaming(tensors, path)
    loaded = safetensors.torch.load_file(path)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name
    assert loaded["embeddings.weight"].data_ptr() != loaded["lm_head.weight"].data_ptr()
    assert torch.equal(weight, tensors["embeddings.weight"])  # the source is untouched


def test_streamed_safetensors_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "w.safetensors"
    write_safetensors_streaming({"a": torch.ones(3)}, path)
    assert str(path) in synced


@pytest.mark.parametrize(
    ("tensors", "error", "match"),
    [
        ({"s": torch.eye(3).to_sparse()}, ValueError, "dense"),
        ({"c": torch.zeros(2, dtype=torch.complex128)}, ValueError, "no safetensors equivalent"),
        ({"n": [1.0, 2.0]}, TypeError, "expected a torch.Tensor"),
    ],
)
def test_unsupported_tensors_are_refused_before_writing(
    tmp_path: Path, tensors: dict[str, object], error: type[Exception], match: str
) -> None:
    path = tmp_path / "bad.safetensors"
    with pytest.raises(error, match=match):
        write_safetensors_streaming(tensors, path)  # type: ignore[arg-type]
    assert not path.exists()


def test_metadata_values_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="strings"):
        write_safetensors_streaming({"a": torch.ones(1)}, tmp_path / "m", {"epoch": 3})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------- commit protocol


def staged(tmp_path: Path, name: str = "epoch_0001") -> tuple[Path, Path]:
    target = tmp_path / "checkpoints" / name
    staging = make_staging_dir(target)
    (staging / "a.bin").write_bytes(b"a")
    (staging / "b.bin").write_bytes(b"b")
    return staging, target


def test_staging_dirs_are_recognizable_and_beside_the_target(tmp_path: Path) -> None:
    staging, target = staged(tmp_path)
    assert staging.parent == target.parent
    assert staging.name.startswith(".tmp-epoch_0001-")


def test_commit_fsyncs_files_and_staging_then_renames_then_fsyncs_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, target = staged(tmp_path)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"replace {src} -> {dst}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    commit_directory(staging, target)
    assert events == [
        f"fsync {staging / 'a.bin'}",
        f"fsync {staging / 'b.bin'}",
        f"fsync {staging}",
        f"replace {staging} -> {target}",
        f"fsync {target.parent}",
    ]
    assert sorted(p.name for p in target.iterdir()) == ["a.bin", "b.bin"]
    assert not staging.exists()


def test_commit_refuses_an_existing_target_or_a_staging_dir_elsewhere(tmp_path: Path) -> None:
    staging, target = staged(tmp_path)
    target.mkdir()
    (target / "keep").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        commit_directory(staging, target)
    assert (target / "keep").read_bytes() == b"old"
    with pytest.raises(ValueError, match="beside"):
        commit_directory(staging, tmp_path / "elsewhere" / "epoch_0002")


def test_remove_stale_staging_removes_only_staging_dirs(tmp_path: Path) -> None:
    stale, _ = staged(tmp_path)
    folder = stale.parent
    (folder / "epoch_0000").mkdir()
    (folder / "quarantine").mkdir()
    (folder / ".tmp-a-file").write_bytes(b"not a directory")
    assert remove_stale_staging(folder) == [stale]
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-a-file", "epoch_0000", "quarantine"]
    assert remove_stale_staging(tmp_path / "missing") == []


def test_quarantine_never_overwrites(tmp_path: Path) -> None:
    root = tmp_path / "quarantine"
    moved = []
    for _ in range(3):
        path = tmp_path / "epoch_0001"
        path.mkdir()
        (path / "f").write_bytes(b"x")
        moved.append(quarantine_directory(path, root, "20260101T000000Z"))
    assert [p.name for p in moved] == [
        "epoch_0001-20260101T000000Z",
        "epoch_0001-20260101T000000Z-1",
        "epoch_0001-20260101T000000Z-2",
    ]
    assert all((p / "f").read_bytes() == b"x" for p in moved)


def test_delete_directory_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "epoch_0001"
    path.mkdir()
    (path / "f").write_bytes(b"x")
    delete_directory(path)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_digest() -> None:
    files = {"b.pt": "2" * 64, "a.safetensors": "1" * 64}
    expected = hashlib.sha256(f"a.safetensors:{'1' * 64}\nb.pt:{'2' * 64}\n".encode()).hexdigest()
    assert checkpoint_digest(files) == expected
    assert checkpoint_digest(dict(reversed(files.items()))) == expected
    assert checkpoint_digest({**files, "b.pt": "3" * 64}) != expected
    assert checkpoint_digest({"c.pt": "2" * 64, "a.safetensors": "1" * 64}) != expected
