"""Which shards to read, and which of them this process reads.

Shard specs are local paths or directories, brace patterns (`data-{000..099}.tar`), globs,
`pipe:` commands and http(s) URLs; a local path that exists is taken as written, before
any pattern. Work is split first by rank (`RANK`/`WORLD_SIZE`, or
SLURM's `SLURM_PROCID`/`SLURM_NTASKS`), then by DataLoader worker, so that every shard is
read exactly once across all processes.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import torch.utils.data

from vqtok.pipelines.errors import UsageError

REMOTE_PREFIXES = ("pipe:", "http://", "https://")


def expand_shards(specs: str | Sequence[str]) -> list[str]:
    """Expand specs into shard URLs, in order; a directory stands for its sorted `*.tar`."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    urls: list[str] = []
    for spec in specs:
        # A path that exists is read as written: `shards{1}` or `run[2]` made by another
        # command must read back, not expand to names that do not exist.
        literal = not str(spec).startswith(REMOTE_PREFIXES) and Path(spec).exists()
        for url in [str(spec)] if literal else braceexpand.braceexpand(str(spec)):
            urls.extend(_local_or_remote(url))
    if not urls:
        raise UsageError(f"no shards found in {', '.join(map(str, specs))}")
    duplicates = sorted({url for url in urls if urls.count(url) > 1})
    if duplicates:
        raise UsageError(f"shards listed twice would be read twice: {', '.join(duplicates)}")
    return urls


def _local_or_remote(url: str) -> list[str]:
    if url.startswith(REMOTE_PREFIXES):
        return [url]
    # A quoted `shards/*.tar`, expanded here as a shell would (unless it names a real path).
    if glob.has_magic(url) and not Path(url).exists():
        matches = sorted(glob.glob(url))
        if not matches:
            raise UsageError(f"no shard matches {url}")
        return matches
    path = Path(url)
    if path.is_dir():
        return [str(p) for p in sorted(path.glob("*.tar"))]
    if not path.is_file():
        raise UsageError(f"shard not found: {url}")
    return [url]


def shard_name(url: str) -> str:
    """The basename a shard's outputs are named after (`.../data-003.tar` -> `data-003`)."""
    base = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if url.startswith("pipe:"):
        base = base.split()[0] if base.split() else base
    return base[: -len(".tar")] if base.endswith(".tar") else base


@dataclass(frozen=True)
class Placement:
    """This process's place in a job: `rank` of `world_size` processes."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Placement:
        """Read `RANK`/`WORLD_SIZE`, else `SLURM_PROCID`/`SLURM_NTASKS`, else a single process."""
        env = os.environ if environ is None else environ
        for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            if rank_var in env and size_var in env:
                placement = cls(int(env[rank_var]), int(env[size_var]))
                if not 0 <= placement.rank < placement.world_size:
                    raise UsageError(
                        f"{rank_var}={placement.rank} is not below "
                        f"{size_var}={placement.world_size}"
                    )
                return placement
        return cls()

    def select(self, shards: Sequence[str]) -> list[str]:
        """This rank's shards: every `world_size`-th one starting at `rank`."""
        if len(shards) < self.world_size:
            raise UsageError(
                f"{len(shards)} shards cannot feed {self.world_size} ranks; "
                "make more, smaller shards (vqtok shards make --maxcount)"
            )
        return list(shards[self.rank :: self.world_size])


def worker_shards(shards: Sequence[str]) -> list[str]:
    """The shards the calling DataLoader worker reads (all of them outside a worker)."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return list(shards)
    if len(shards) < info.num_workers:
        raise UsageError(
            f"{len(shards)} shards cannot feed {info.num_workers} DataLoader workers; "
            "use fewer workers or more shards"
        )
    return list(shards[info.id :: info.num_workers])
