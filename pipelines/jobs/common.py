"""What shard-to-shard jobs (encode, decode) share: output bookkeeping and model loading.

For each input shard `<name>` a job writes `<name>.tar` (via `<name>.tar.partial`), then
`<name>.stats.json`, which marks it done; skipped samples go to `<name>.errors.jsonl`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import vqtok
from vqtok import VQTokenizer
from vqtok.pipelines.data.sources import shard_name
from vqtok.pipelines.data.tario import partial_path
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.preflight import check_device


class ShardOutputs:
    """The per-shard output files of a job under `root`.

    `with_tar=False` when a job writes loose files.
    """

    def __init__(self, root: Path, with_tar: bool = True) -> None:
        self.root = Path(root)
        self.with_tar = with_tar

    def tar(self, name: str) -> Path:
        return self.root / f"{name}.tar"

    def stats(self, name: str) -> Path:
        return self.root / f"{name}.stats.json"

    def errors(self, name: str) -> Path:
        return self.root / f"{name}.errors.jsonl"

    def is_done(self, name: str) -> bool:
        return self.stats(name).is_file() and (self.tar(name).is_file() or not self.with_tar)

    def prepare(self, urls: Sequence[str], names: dict[str, str], *, resume: bool) -> list[str]:
        """Create `root` and return the URLs still to do; without `resume`, refuse to overwrite."""
        self.root.mkdir(parents=True, exist_ok=True)
        existing = [names[u] for u in urls if any(p.exists() for p in self._files(names[u]))]
        if existing and not resume:
            raise UsageError(
                f"{self.root} already holds output for {len(existing)} shard(s) "
                f"(e.g. {existing[0]}); pass --resume to continue that job, "
                "or choose an empty folder"
            )
        todo = [u for u in urls if not self.is_done(names[u])]
        for url in todo:
            for path in self._files(names[url]):
                path.unlink(missing_ok=True)
        return todo

    def _files(self, name: str) -> list[Path]:
        tar = self.tar(name)
        return [tar, partial_path(tar), self.stats(name), self.errors(name)]

    def mark_done(self, name: str, stats: dict) -> None:
        self.stats(name).write_text(json.dumps(stats, sort_keys=True) + "\n")

    def save_config(self, filename: str, config: dict) -> None:
        """Save the resolved job config beside the outputs."""
        (self.root / filename).write_text(
            json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
        )


def shard_names(urls: Sequence[str]) -> dict[str, str]:
    """URL -> output basename; two inputs with one basename would overwrite each other."""
    names = {url: shard_name(url) for url in urls}
    seen: dict[str, str] = {}
    for url, name in names.items():
        if name in seen:
            raise UsageError(f"shards {seen[name]} and {url} share the basename {name!r}")
        seen[name] = url
    return names


def load_model(
    model_or_path: VQTokenizer | str | Path, device: str, *, tokenizer: bool = True
) -> VQTokenizer:
    """A model in eval mode on `device`, from a model or a checkpoint path. With `tokenizer`
    (the code jobs) anything without discrete codes is refused."""
    check_device(device)
    if isinstance(model_or_path, (str, Path)):
        try:
            model_or_path = vqtok.load(model_or_path)
        except vqtok.CheckpointError as exc:
            raise UsageError(f"cannot load checkpoint: {exc}") from None
    if tokenizer and not isinstance(model_or_path, VQTokenizer):
        raise UsageError(
            f"this job needs a tokenizer checkpoint; {type(model_or_path).__name__} has no "
            "discrete codes (VAE baselines are evaluated with `vqtok eval nll`)"
        )
    return model_or_path.to(device).eval()


def write_summary(root: Path, job: str, summary: dict) -> Path:
    """Write `<job>-summary.json` (one per rank when several ranks share `root`)."""
    rank = summary.get("rank")
    path = root / (f"{job}-summary.json" if rank in (None, 0) else f"{job}-summary-rank{rank}.json")
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path

