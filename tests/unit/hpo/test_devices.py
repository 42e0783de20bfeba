"""hpo.devices on a host: which slots, pinned how, with how many threads (pure; no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_tiny
from dsm5_hpo.errors import ConfigError
from dsm5_hpo.hpo.devices import DeviceSlot, in_process, resolve_devices


def _config(tmp_path: Path, *overrides: str):  # type: ignore[no-untyped-def]
    return compose_tiny(tmp_path / "exp", tmp_path / "cache", *overrides)


def test_auto_is_one_cpu_slot_without_a_gpu_and_every_gpu_with_some(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert resolve_devices(config, cuda_count=0, cpu_count=8) == [DeviceSlot("cpu")]
    assert resolve_devices(config, cuda_count=2, cpu_count=8) == [
        DeviceSlot("cuda:0", cuda_visible="0"),
        DeviceSlot("cuda:1", cuda_visible="1"),
    ]


def test_a_slot_pins_the_physical_gpu_this_process_sees_as_that_index(tmp_path: Path) -> None:
    config = _config(tmp_path, "hpo.devices='1,2'")
    slots = resolve_devices(config, cuda_count=4, cpu_count=8, visible="4,5,6,7")
    assert slots == [DeviceSlot("cuda:1", cuda_visible="5"), DeviceSlot("cuda:2", cuda_visible="6")]


def test_auto_with_a_named_device_or_the_cpu_keeps_one_slot(tmp_path: Path) -> None:
    assert resolve_devices(_config(tmp_path, "train.device=cuda:1"), cuda_count=4, cpu_count=8) == [
        DeviceSlot("cuda:1")
    ]
    assert resolve_devices(_config(tmp_path, "train.device=cpu"), cuda_count=4, cpu_count=8) == [
        DeviceSlot("cpu")
    ]


def test_cpu_slots_split_the_cores_and_hide_every_gpu(tmp_path: Path) -> None:
    slots = resolve_devices(_config(tmp_path, "hpo.devices=cpu:2"), cuda_count=1, cpu_count=5)
    assert slots == [DeviceSlot(f"cpu:{i}", cuda_visible="", threads=2) for i in range(2)]


@pytest.mark.parametrize(
    ("overrides", "cuda_count", "says"),
    [
        (("hpo.devices=cpu:3",), 0, "3 CPU trials at once on 2 cores"),
        (("hpo.devices=cpu:2", "train.device=cuda"), 1, "train.device=cuda"),
        (("hpo.devices='0,1'",), 0, "torch sees none here"),
        (("hpo.devices='0,0'",), 2, "names a device twice"),
        (("hpo.devices='1,3'",), 2, "no CUDA device 3"),
        (("hpo.devices='0,1'", "train.device=cpu"), 2, "set train.device=auto"),
    ],
)
def test_devices_that_cannot_be_had_name_the_setting_and_the_fix(
    tmp_path: Path, overrides: tuple[str, ...], cuda_count: int, says: str
) -> None:
    with pytest.raises(ConfigError, match=r"hpo\.devices") as error:
        resolve_devices(_config(tmp_path, *overrides), cuda_count=cuda_count, cpu_count=2)
    assert says in str(error.value)


def test_isolation_auto_is_a_process_on_cuda_in_process_on_the_cpu_and_more_slots_need_processes(
    tmp_path: Path,
) -> None:
    one, two = [DeviceSlot("cpu")], [DeviceSlot("cpu:0"), DeviceSlot("cpu:1")]
    config = _config(tmp_path)
    assert in_process(config, one, cuda=False) and not in_process(config, one, cuda=True)
    assert not in_process(config, two, cuda=False)
    assert not in_process(_config(tmp_path, "hpo.trial_isolation=process"), one, cuda=False)
    assert in_process(_config(tmp_path, "hpo.trial_isolation=none"), one, cuda=True)
    with pytest.raises(ConfigError, match=r"hpo\.trial_isolation=none"):
        in_process(_config(tmp_path, "hpo.trial_isolation=none"), two, cuda=False)


def test_a_list_of_gpus_on_the_command_line_is_the_same_as_the_quoted_string(tmp_path: Path) -> None:
    assert _config(tmp_path, "hpo.devices=[0,1]").hpo.devices == "0,1"
    assert _config(tmp_path, "hpo.devices='0,1'").hpo.devices == "0,1"


def test_ddp_groups_consecutive_devices_into_trials_of_ddp_processes(tmp_path: Path) -> None:
    eight = resolve_devices(_config(tmp_path, "train.distributed=ddp"), cuda_count=8, cpu_count=16)
    assert [(s.name, s.cuda_visible, s.ranks) for s in eight] == [
        (f"cuda:{i},{i + 1}", f"{i},{i + 1}", 2) for i in range(0, 8, 2)
    ]
    cpu = resolve_devices(
        _config(tmp_path, "train.distributed=ddp", "hpo.devices=cpu:2"), cuda_count=0, cpu_count=2
    )
    assert cpu == [DeviceSlot("cpu:0,1", cuda_visible="", threads=1, ranks=2)]
    alone = resolve_devices(_config(tmp_path, "train.distributed=ddp"), cuda_count=0, cpu_count=4)
    assert alone == [DeviceSlot("cpu", cuda_visible="", threads=2, ranks=2)]
    with pytest.raises(ConfigError, match="multiple of 2"):
        resolve_devices(
            _config(tmp_path, "train.distributed=ddp", "hpo.devices='0,1,2'"), cuda_count=3, cpu_count=8
        )
    with pytest.raises(ConfigError, match=r"trains it in 2 processes"):
        in_process(_config(tmp_path, "train.distributed=ddp", "hpo.trial_isolation=none"), alone, cuda=False)
    assert not in_process(_config(tmp_path, "train.distributed=ddp"), alone, cuda=False)
