"""One batch over several processes started by PyTorch's own launcher (``torchrun``), through ``torch.distributed``.

Nothing here knows the command line: it detects a torchrun launch, opens the process group, shards a sorted input
list, offers a barrier and an "agree on rank 0's value" call, and keeps each rank's share of the batch tables in
its own files until rank 0 merges them (input order) into the final ones.

How a distributed batch runs (``torchrun --nproc-per-node N -m inversion.cli ...``):

1. every rank lists the same inputs (sorted) and takes :func:`shard` of them (round robin: item ``i`` goes to
   rank ``i % N``), on its own device (``cuda:LOCAL_RANK``, or the CPU);
2. each rank publishes its photos' folders exactly as a single process does, and after every photo rewrites its
   part files ``OUT/.ranks/metrics.rank<R>.csv`` / ``summary.rank<R>.json`` (:func:`write_part`);
3. all ranks meet at a barrier; rank 0 reads every part file of this run (:func:`read_parts`), writes
   ``metrics.csv`` / ``summary.json`` in input order and removes the part files.

When a rank dies: the photos it published stay (a folder appears only when complete). A rank that meets a fatal
error (for instance missing weights) still writes its part and reaches the barrier, so the others finish and
rank 0 merges. A rank killed outright makes torchrun stop the others (its default): they stop after the current
step (SIGTERM is treated like Ctrl-C), and rank 0 merges whatever part files exist, the dead rank's last photos
counted as "not reached". Part files carry a run token, so files of an earlier run are never merged. Running
the same command again (with any number of processes, or none) skips every finished photo and does the rest;
``torchrun --max-restarts K`` does that automatically.

Without torchrun (no ``WORLD_SIZE`` in the environment) :func:`detect_launch` gives a world of one process and
:func:`open_ranks` a group whose calls do nothing: nothing changes.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, TypeVar

import torch

T = TypeVar("T")
RANKS_DIR = ".ranks"
"""Folder (inside the output folder) of the per-rank part files; removed after a successful merge."""
WAIT = timedelta(days=7)
"""How long a rank waits at the barrier for slower ranks (a dead rank is noticed at once, not after this)."""


class LaunchError(RuntimeError):
    """The torchrun environment is inconsistent or the process group cannot start (plain message)."""


# ------------------------------------------------------------------------------------------ launch

@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    text = env.get(key)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"{key}={text!r} in the environment is not a whole number") from None


def detect_launch(env: Optional[Mapping[str, str]] = None) -> Launch:
    """The launch described by torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (default: ``os.environ``);
    a single process when ``WORLD_SIZE`` is absent or 1."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Launch()
    rank, local = _env_int(env, "RANK", -1), _env_int(env, "LOCAL_RANK", -1)
    if not 0 <= rank < world:
        raise LaunchError(f"RANK={env.get('RANK')!r} does not fit WORLD_SIZE={world}; start with torchrun")
    if local < 0:
        raise LaunchError("LOCAL_RANK is not set; start with torchrun")
    return Launch(rank, world, local)


def rank_device(launch: Launch, device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA (one GPU per process), else ``device`` unchanged."""
    if device.type != "cuda" or not launch.distributed:
        return device
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise LaunchError(f"process {launch.local_rank} on this machine has no GPU of its own ({count} GPU(s) "
                          "visible); start at most that many processes per node")
    return torch.device("cuda", launch.local_rank)


def owner(index: int, world_size: int) -> int:
    """The rank that does item ``index`` under :func:`shard`."""
    return index % world_size


def shard(count: int, launch: Launch) -> list[int]:
    """Indices (into a list of ``count`` items sorted the same way on every rank) that ``launch.rank`` does:
    round robin, so ranks get equal shares (within one) and neighbouring inputs spread over the ranks."""
    return list(range(launch.rank, count, launch.world_size))


# ------------------------------------------------------------------------------------------ process group

def _plain(err: BaseException) -> str:
    """A one-line form of a torch.distributed error (source locations and sign-offs dropped)."""
    text = re.sub(r"\[[^\]]*\.(?:cpp|cc|h)(?::\d+)?\]\s*", "", " ".join(str(err).split()))
    text = text.split(" GLHF")[0].strip()
    return text[:300] or type(err).__name__


@dataclass
class Ranks:
    """An open process group for one batch (or none, for a single process). ``token`` is the same on every rank
    and new for every run: it tags part files, so :func:`read_parts` never merges an earlier run's files."""

    launch: Launch
    device: torch.device
    token: str
    _control: Any = field(default=None, repr=False)  # gloo group for barrier and small objects

    def barrier(self) -> str:
        """Wait for every rank; "" when all arrived, else what went wrong (on rank 0: which ranks are missing)."""
        if not self.launch.distributed:
            return ""
        import torch.distributed as dist

        try:
            dist.monitored_barrier(group=self._control, timeout=WAIT, wait_all_ranks=True)
        except RuntimeError as err:
            return _plain(err)
        return ""

    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a small picklable object); this rank's own when a peer is gone."""
        if not self.launch.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        try:
            dist.broadcast_object_list(box, src=0, group=self._control)
        except RuntimeError:
            return value
        return box[0]


@contextmanager
def open_ranks(launch: Launch, device: torch.device) -> Iterator[Ranks]:
    """Start ``torch.distributed`` for ``launch`` (NCCL on CUDA, gloo on the CPU, plus a gloo group for the
    barrier) and close it on exit; for a single process nothing is started. ``device`` is the rank's own
    (:func:`rank_device`)."""
    if not launch.distributed:
        yield Ranks(launch, device, uuid.uuid4().hex)
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise LaunchError("this PyTorch build has no torch.distributed; run without torchrun")
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", rank=launch.rank, world_size=launch.world_size,
                                timeout=WAIT)
        control = dist.new_group(backend="gloo", timeout=WAIT) if cuda else None
    except (RuntimeError, ValueError) as err:
        raise LaunchError(f"the process group could not start: {_plain(err)}") from None
    try:
        ranks = Ranks(launch, device, "", control)
        ranks.token = ranks.agree(uuid.uuid4().hex if launch.is_main else "")
        yield ranks
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ part files

def part_paths(out: Path, rank: int) -> tuple[Path, Path]:
    """``(csv, json)`` part files of ``rank`` under ``out/.ranks``."""
    folder = out / RANKS_DIR
    return folder / f"metrics.rank{rank}.csv", folder / f"summary.rank{rank}.json"


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A CSV file (header ``columns``, then ``rows``), replaced atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    _replace_text(path, buf.getvalue())


def write_part(out: Path, ranks: Ranks, *, columns: Sequence[str], rows: Sequence[tuple[int, Sequence[Any]]],
               entries: Sequence[tuple[int, Mapping[str, Any]]], info: Mapping[str, Any]) -> None:
    """Replace this rank's part files: CSV ``rows`` (``(input index, row)``, the index kept as a first column),
    JSON ``entries`` (``(input index, entry)``) and ``info`` (anything rank 0 should see, e.g. an error)."""
    csv_path, json_path = part_paths(out, ranks.launch.rank)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(csv_path, ["index", *columns], [[index, *row] for index, row in rows])
    data = {"token": ranks.token, "rank": ranks.launch.rank, "world_size": ranks.launch.world_size,
            "entries": [{"index": index, **entry} for index, entry in entries], "info": dict(info)}
    _replace_text(json_path, json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False))


@dataclass
class Merged:
    """The parts of one run, merged: entries and CSV rows by input index, each rank's info, ranks without files."""

    entries: dict[int, dict[str, Any]]
    rows: list[list[str]]
    infos: dict[int, dict[str, Any]]
    missing: list[int]


def read_parts(out: Path, ranks: Ranks, columns: Sequence[str]) -> Merged:
    """Every rank's part files of this run (same token), merged; CSV rows ordered by input index (stable within
    one index). A rank whose files are absent, unreadable, of another run or of other columns is ``missing``."""
    entries: dict[int, dict[str, Any]] = {}
    keyed: list[tuple[int, int, list[str]]] = []
    infos: dict[int, dict[str, Any]] = {}
    missing: list[int] = []
    for rank in range(ranks.launch.world_size):
        csv_path, json_path = part_paths(out, rank)
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            with open(csv_path, newline="", encoding="utf-8") as fh:
                table = list(csv.reader(fh))
        except (OSError, ValueError):
            missing.append(rank)
            continue
        if data.get("token") != ranks.token or not table or table[0] != ["index", *columns]:
            missing.append(rank)
            continue
        infos[rank] = data.get("info", {})
        for entry in data.get("entries", []):
            entry = dict(entry)
            entries[int(entry.pop("index"))] = entry
        keyed.extend((int(row[0]), n, row[1:]) for n, row in enumerate(table[1:]))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return Merged(entries, [row for _, _, row in keyed], infos, missing)


def remove_parts(out: Path) -> None:
    """Delete the part files (after a merge); a missing folder is fine."""
    folder = out / RANKS_DIR
    for path in folder.glob("*"):
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
