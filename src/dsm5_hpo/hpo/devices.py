"""Which devices a study's trials run on (hpo.devices), one trial at a time per device: pure logic.

A CUDA slot pins its trial process to one GPU with ``CUDA_VISIBLE_DEVICES`` (the trial then sees it
as cuda:0); a CPU slot hides every GPU and gets its share of the cores (``cpu:N`` splits them N ways,
so two trials on 2 cores train with one thread each instead of thrashing).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsm5_hpo.config import StudyConfig
from dsm5_hpo.errors import ConfigError


@dataclass(frozen=True)
class DeviceSlot:
    name: str
    """How reports name it: 'cuda:2' (the index this process sees), 'cpu:0', or 'cpu' (one CPU trial)."""
    cuda_visible: str | None = None
    """CUDA_VISIBLE_DEVICES for the trial's process: '2' (one GPU), '' (none), None (leave as is)."""
    threads: int | None = None
    """torch threads of the trial (its share of the cores), or None for torch's default; per process
    of a DDP trial."""
    ranks: int = 1
    """Processes of the trial (train.distributed=ddp: train.ddp_processes, one per GPU of the slot)."""


def resolve_devices(
    config: StudyConfig, *, cuda_count: int, cpu_count: int, visible: str | None = None
) -> list[DeviceSlot]:
    """The slots for ``config``'s hpo.devices on this host: ``cuda_count`` GPUs seen by torch, ``cpu_count``
    cores, ``visible``: this process's CUDA_VISIBLE_DEVICES (a slot pins a physical id from it). With
    train.distributed=ddp, consecutive devices are grouped into slots of train.ddp_processes (8 GPUs:
    4 trials of 2 GPUs each)."""
    devices = _devices(config, cuda_count=cuda_count, cpu_count=cpu_count, visible=visible)
    if config.train.distributed != "ddp":
        return devices
    size = config.train.ddp_processes
    if len(devices) == 1 and devices[0].cuda_visible is None and devices[0].name == "cpu":
        # One CPU slot (hpo.devices=auto without a GPU): the trial's processes split the cores.
        return [DeviceSlot("cpu", cuda_visible="", threads=max(1, cpu_count // size), ranks=size)]
    if len(devices) % size or devices[0].cuda_visible is None:
        raise ConfigError(
            f"train.distributed=ddp with train.ddp_processes={size} needs hpo.devices to give a multiple of "
            f"{size} devices, got {len(devices)} ({', '.join(d.name for d in devices)}); e.g. hpo.devices=cpu:{size}"
            f" or {size} GPUs"
        )
    groups = [devices[i : i + size] for i in range(0, len(devices), size)]
    return [
        DeviceSlot(
            _group_name(group),
            cuda_visible=",".join(str(d.cuda_visible) for d in group if d.cuda_visible) or "",
            threads=group[0].threads,
            ranks=size,
        )
        for group in groups
    ]


def _group_name(group: list[DeviceSlot]) -> str:
    """'cuda:0,1' / 'cpu:0,1' for the devices of one DDP trial."""
    kind = group[0].name.split(":", 1)[0]
    return f"{kind}:{','.join(d.name.split(':', 1)[1] for d in group)}"


def _devices(
    config: StudyConfig, *, cuda_count: int, cpu_count: int, visible: str | None
) -> list[DeviceSlot]:
    spec, device = config.hpo.devices, config.train.device
    if spec.startswith("cpu:"):
        count = int(spec.removeprefix("cpu:"))
        if count > cpu_count:
            raise ConfigError(
                f"hpo.devices={spec} asks for {count} CPU trials at once on {cpu_count} cores; give at most "
                f"cpu:{cpu_count} (each trial needs one core)"
            )
        if device.startswith("cuda"):
            raise ConfigError(
                f"hpo.devices={spec} runs trials on the CPU but train.device={device}; drop one"
            )
        threads = max(1, cpu_count // count)
        return [DeviceSlot(f"cpu:{i}", cuda_visible="", threads=threads) for i in range(count)]
    physical = _visible_ids(visible, cuda_count)
    if spec == "auto":
        if device == "cpu" or cuda_count == 0:
            return [DeviceSlot("cpu")]
        if device.startswith("cuda:"):  # one named GPU: the trials run there, one at a time, as before
            return [DeviceSlot(device)]
        return [DeviceSlot(f"cuda:{i}", cuda_visible=physical[i]) for i in range(cuda_count)]
    indices = [int(part) for part in spec.split(",")]
    if cuda_count == 0:
        raise ConfigError(
            f"hpo.devices={spec} names CUDA devices but torch sees none here; use hpo.devices=cpu:N "
            "for CPU trials, or auto"
        )
    if len(set(indices)) != len(indices):
        raise ConfigError(f"hpo.devices={spec} names a device twice; each runs one trial at a time")
    unknown = [i for i in indices if i >= cuda_count]
    if unknown:
        raise ConfigError(
            f"hpo.devices={spec}: no CUDA device {', '.join(map(str, unknown))} here (torch sees "
            f"{cuda_count}: 0..{cuda_count - 1}{', after CUDA_VISIBLE_DEVICES=' + visible if visible else ''})"
        )
    if device not in ("auto", "cuda"):
        raise ConfigError(
            f"hpo.devices={spec} pins each trial to one GPU, but train.device={device}; set "
            "train.device=auto (or cuda) with hpo.devices"
        )
    return [DeviceSlot(f"cuda:{i}", cuda_visible=physical[i]) for i in indices]


def _visible_ids(visible: str | None, cuda_count: int) -> list[str]:
    """The ids to put in a child's CUDA_VISIBLE_DEVICES for the indices torch shows this process."""
    if visible:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        if len(ids) >= cuda_count:
            return ids[:cuda_count]
    return [str(i) for i in range(cuda_count)]


def in_process(config: StudyConfig, slots: list[DeviceSlot], *, cuda: bool) -> bool:
    """Whether trials run in this process (hpo.trial_isolation resolved): 'auto' is a process per trial
    on CUDA (where a crash or an out-of-memory is common and GPU memory must come back) and in-process
    on the CPU (where start-up time matters more); more than one device needs processes."""
    isolation = config.hpo.trial_isolation
    if any(slot.ranks > 1 for slot in slots):
        if isolation == "none":
            raise ConfigError(
                "hpo.trial_isolation=none runs a trial in this process, but train.distributed=ddp trains it in "
                f"{slots[0].ranks} processes; use hpo.trial_isolation=process or auto"
            )
        return False
    if len(slots) > 1:
        if isolation == "none":
            raise ConfigError(
                f"hpo.trial_isolation=none runs trials in this process, one at a time, but hpo.devices="
                f"{config.hpo.devices} asks for {len(slots)} at once; use hpo.trial_isolation=process or auto"
            )
        return False
    if isolation == "auto":
        return not cuda
    return isolation == "none"
