"""Where RedSM5 rows come from: a local folder of CSVs, or the Hugging Face hub with a pinned revision.

Both produce the same :class:`RedSM5` records, so splits and features do not depend on the
source. The hub is tried cache-first, then online with exponential backoff; when it cannot
be reached, the local folder is used with a WARNING.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsm5_hpo.config import DataConfig
from dsm5_hpo.data.schema import (
    ANNOTATIONS_FILE,
    POSTS_FILE,
    RedSM5,
    validate_annotations,
    validate_posts,
)
from dsm5_hpo.errors import DataError
from dsm5_hpo.utils.environment import env_flag
from dsm5_hpo.utils.hub import is_permanent_hub_error
from dsm5_hpo.utils.retry import RetryConfig, call_with_retry

logger = logging.getLogger(__name__)

Rows = tuple[list[dict[str, Any]], list[str]]
HubLoader = Callable[[str, str, bool], tuple[Rows, Rows]]
"""(hub_id, revision, local_files_only) -> (posts rows+columns, annotation rows+columns)."""


def _read_csv(path: Path) -> Rows:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found. Put the RedSM5 CSVs ({POSTS_FILE}, {ANNOTATIONS_FILE}) in "
            f"{path.parent} (see Data/README.md), or use the bundled sample with data=redsm5_sample"
        )
    line = 0
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") would otherwise stick to the first
        # column name. strict: an unclosed quote raises instead of silently swallowing the rest
        # of the file into one field.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, strict=True)
            columns = list(reader.fieldnames or [])  # reads the header
            line = reader.line_num  # where the last good record ends
            rows: list[dict[str, Any]] = []
            for row in reader:
                line = reader.line_num
                if None in row:  # more fields than the header: an unquoted comma split a field
                    raise DataError(
                        f"{path}: malformed CSV in the record ending at line {line}: more fields than the header's "
                        f"{len(columns)}; quote fields that contain commas"
                    )
                rows.append(row)
            return rows, columns
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error}); re-save the file as UTF-8 CSV") from error
    except csv.Error as error:
        raise DataError(
            f"{path}: malformed CSV in the record starting at line {line + 1} ({error}); check the quoting "
            "of the text column (a field with commas, quotes or line breaks must be in double quotes, "
            "inner quotes doubled)"
        ) from error


def _files_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def build_dataset(posts: Rows, annotations: Rows, *, where: str, source: str, revision: str) -> RedSM5:
    """Validate raw rows from any source into a :class:`RedSM5`."""
    post_map = validate_posts(posts[0], posts[1], f"{where}/{POSTS_FILE}")
    records = validate_annotations(annotations[0], annotations[1], post_map, f"{where}/{ANNOTATIONS_FILE}")
    return RedSM5(posts=post_map, annotations=records, source=source, revision=revision)


def load_local(folder: Path) -> RedSM5:
    """Read and validate the two CSVs in ``folder``."""
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} does not exist. Put {POSTS_FILE} and {ANNOTATIONS_FILE} there "
            "(see Data/README.md), or set data.local_dir=DIR"
        )
    posts_path, annotations_path = folder / POSTS_FILE, folder / ANNOTATIONS_FILE
    posts, annotations = _read_csv(posts_path), _read_csv(annotations_path)
    return build_dataset(
        posts,
        annotations,
        where=str(folder),
        source=f"local:{folder}",
        revision=_files_digest([posts_path, annotations_path]),
    )


def _datasets_hub_loader(hub_id: str, revision: str, local_files_only: bool) -> tuple[Rows, Rows]:
    """Load the two CSV files of the hub dataset through ``datasets`` (cache-aware)."""
    import datasets  # heavy import, only when the hub is used

    loaded = datasets.load_dataset(
        hub_id,
        data_files={"posts": POSTS_FILE, "annotations": ANNOTATIONS_FILE},
        revision=revision or None,
        download_config=datasets.DownloadConfig(local_files_only=local_files_only, max_retries=1),
    )

    def rows(split: str) -> Rows:
        table = loaded[split]
        return [dict(r) for r in table], list(table.column_names)

    return rows("posts"), rows("annotations")


# Five attempts, waiting 1, 2, 4, 8 s between them.
_HUB_RETRY = RetryConfig()


class _Transient(Exception):
    """Wraps a hub error that another attempt may fix."""


def load_hub(
    hub_id: str,
    revision: str,
    *,
    loader: HubLoader = _datasets_hub_loader,
    retry: RetryConfig = _HUB_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> RedSM5:
    """Cache first, then the hub with backoff. Raises the last hub error when all attempts fail."""
    where = f"hub:{hub_id}@{revision or 'main'}"
    try:
        posts, annotations = loader(hub_id, revision, True)
        logger.info("loaded %s from the local Hugging Face cache", where)
    except Exception as cache_miss:  # noqa: BLE001 - any cache failure means: go online
        logger.debug("%s not in the local cache (%s)", where, cache_miss)

        def online() -> tuple[Rows, Rows]:
            try:
                return loader(hub_id, revision, False)
            except Exception as error:
                if is_permanent_hub_error(error):
                    raise
                raise _Transient(str(error)) from error

        last_error: BaseException | None = None
        try:
            posts, annotations = call_with_retry(
                online, config=retry, retry_on=(_Transient,), sleep=sleep, description=f"download of {where}"
            )
        except _Transient as exhausted:
            last_error = exhausted.__cause__ or exhausted
        if last_error is not None:  # every attempt failed: raise the hub's own error, not our wrapper
            raise last_error from last_error.__cause__  # its own cause, unchanged
    return build_dataset(posts, annotations, where=where, source=f"hub:{hub_id}", revision=revision or "main")


def load_redsm5(
    config: DataConfig,
    *,
    hub_loader: HubLoader = _datasets_hub_loader,
    sleep: Callable[[float], None] = time.sleep,
    environ: Mapping[str, str] = os.environ,
) -> RedSM5:
    """Load the dataset the config names; source=hub falls back to local_dir with a WARNING."""
    folder = Path(config.local_dir)
    if config.source == "hub":
        if env_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", environ=environ):
            logger.warning("HF_HUB_OFFLINE is set: not contacting the hub; using local data in %s", folder)
        else:
            try:
                return load_hub(config.hub_id, config.revision, loader=hub_loader, sleep=sleep)
            except DataError:
                raise  # the hub answered with rows that break the schema: falling back would hide it
            except Exception as error:  # noqa: BLE001 - unreachable, gated or missing: fall back
                logger.warning(
                    "could not load %s from the Hugging Face hub (%s: %s); falling back to local data in %s",
                    config.hub_id,
                    type(error).__name__,
                    error,
                    folder,
                )
    return load_local(folder)
