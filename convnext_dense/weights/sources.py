"""Turn a checkpoint source (file, URL, Hugging Face directory or hub id) into a local file.

URLs are downloaded once into torch hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``, where
``torch.hub`` and mmengine also look); hub ids go through ``huggingface_hub``, which keeps its own
cache and honours ``HF_HUB_OFFLINE``. An unreachable source fails within seconds and says where to
put the file instead.
"""
import hashlib
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import torch

from ..atomic_files import atomic_path, write_bytes
from .safe_load import shard_names

HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
# What save_pretrained writes instead when it splits the weights (max_shard_size).
HF_SHARD_INDEXES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')
CONNECT_TIMEOUT_S = 10.0
_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')
# A missing path with one of these endings is a missing file, not a hub id ('work_dirs/x.pth').
_FILE_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')
# torch.hub's convention: a file named "<name>-<sha256 prefix>.<ext>" is checked on download.
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,})\.')

Source = Union[str, os.PathLike]


def resolve_source(source: Source) -> Path:
    """Return the local weights file for a checkpoint source.

    Args:
        source: A local file; an ``http(s)://`` URL; a Hugging Face model directory
            (``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``, or their
            ``*.index.json`` and shards, which :func:`load_state_file` reads); or a hub id such
            as ``'facebook/convnext-base-224-22k'``. An existing local path wins over a hub id.

    Raises:
        TypeError: ``source`` is not a string or path.
        FileNotFoundError: the file is not there and cannot be fetched; the message says where to
            put it.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f'checkpoint must be a path, URL or hub id string, got {source!r}')
    text = os.fspath(source)
    if text.startswith(('http://', 'https://')):
        return download_url(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _weights_in_directory(path)
    if _HUB_ID.fullmatch(text) and path.suffix not in _FILE_SUFFIXES:
        try:
            return download_from_hub(text)
        except FileNotFoundError as err:  # it may have been meant as a local folder
            raise FileNotFoundError(f"'{text}' is no file or folder under {os.getcwd()}, and as "
                                    f'a Hugging Face hub id: {err}') from None
    if path.suffix in _FILE_SUFFIXES:
        raise FileNotFoundError(f"checkpoint '{text}' is not an existing file or directory (a "
                                f"missing {path.suffix} file is not looked up as a hub id)")
    raise FileNotFoundError(
        f"checkpoint '{text}' is not an existing file or directory, an http(s) URL, or a Hugging "
        "Face hub id ('org/name')")


def url_cache_path(url: str) -> Path:
    """Where :func:`download_url` keeps the file of ``url``.

    torch hub's place, ``checkpoints/<file name>``, unless a download recorded there came from
    another URL with the same file name (``.../a/model.pth``, ``.../b/model.pth``): then
    ``checkpoints/by_url/<hash of the URL>/<file name>``, so neither is served for the other.
    """
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f'URL {url} does not end in a file name')
    shared = Path(torch.hub.get_dir()) / 'checkpoints' / name
    recorded = _url_record(shared)
    if recorded.is_file() and recorded.read_text().strip() != url:
        return shared.parent / 'by_url' / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    return shared


def _url_record(path: Path) -> Path:
    """Beside a downloaded file: the URL it came from (a file put there by hand has none)."""
    return path.with_name(f'{path.name}.url')


def download_url(url: str) -> Path:
    """Download ``url`` once into torch hub's cache (with a progress bar) and return the file.

    Raises:
        FileNotFoundError: the URL cannot be reached; the message names the cache path to copy
            the file to.
        ValueError: the downloaded file does not match the hash in its name.
    """
    dst = url_cache_path(url)
    if dst.is_file():
        return dst
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response, \
                atomic_path(dst) as partial:
            digest = _copy_with_progress(response, partial, dst.name)
            _check_hash_in_name(url, dst, digest)
            write_bytes(_url_record(dst), url.encode())
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, 'reason', None) or err
        raise FileNotFoundError(
            f'cannot download {url} ({reason}). If this machine is offline, download the file '
            f'elsewhere and put it at {dst} (it is used from there), or pass its local path in '
            'place of the URL') from None
    return dst


def _check_hash_in_name(url: str, dst: Path, digest: str) -> None:
    expected = _HASH_IN_NAME.search(dst.name)
    if expected and not digest.startswith(expected.group(1)):
        raise ValueError(f'downloaded {url} has sha256 {digest[:len(expected.group(1))]}..., '
                         f'not the {expected.group(1)} in its name; the download is corrupt')


def _copy_with_progress(response, dst: Path, name: str) -> str:
    from tqdm import tqdm
    total = int(response.headers.get('Content-Length') or 0) or None
    digest = hashlib.sha256()
    with open(dst, 'wb') as f, tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024,
                                    desc=name) as bar:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            f.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def download_from_hub(repo_id: str) -> Path:
    """Fetch a model's weights from the Hugging Face hub (or its cache).

    Tries ``model.safetensors``, then ``pytorch_model.bin``, then their shard indexes
    (``*.index.json``, what ``save_pretrained`` writes for a model over ``max_shard_size``); of an
    index, every shard it names is fetched too, into the same snapshot folder.

    Returns:
        The weights file, or the shard index (:func:`load_state_file` reads its shards).

    Raises:
        FileNotFoundError: the repository or its weights cannot be found or reached; the message
            says how to provide them offline.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError)

    def cached_or_raise(err: Exception) -> Path:
        cached = _cached_hub_weights(repo_id)
        if cached is None:
            raise FileNotFoundError(_hub_unreachable_message(repo_id, err)) from None
        return cached

    if not constants.HF_HUB_OFFLINE:
        # huggingface_hub retries a refused connection for ~25 s; find out in seconds instead.
        unreachable = _unreachable(constants.ENDPOINT)
        if unreachable is not None:
            return cached_or_raise(unreachable)
    for filename in HF_WEIGHT_FILES + HF_SHARD_INDEXES:
        try:
            path = Path(hf_hub_download(repo_id, filename, etag_timeout=CONNECT_TIMEOUT_S))
            if filename in HF_SHARD_INDEXES:
                _download_shards(repo_id, path)
            return path
        except LocalEntryNotFoundError as err:  # offline: the other file may still be cached
            return cached_or_raise(err)
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"Hugging Face hub id '{repo_id}' is not a repository (or it is private or "
                'gated: log in with `hf auth login`)') from None
        except EntryNotFoundError:
            continue
        except HfHubHTTPError as err:
            raise FileNotFoundError(_hub_unreachable_message(repo_id, err)) from None
    raise FileNotFoundError(
        f"Hugging Face repository '{repo_id}' has none of the weight files "
        f'{list(HF_WEIGHT_FILES + HF_SHARD_INDEXES)}')


def _download_shards(repo_id: str, index: Path) -> None:
    """Fetch every shard ``index`` names, from the commit the index came from."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    # hf_hub_download keeps a file under snapshots/<commit>/: the index's folder names its commit.
    for shard in shard_names(index):
        try:
            hf_hub_download(repo_id, shard, revision=index.parent.name,
                            etag_timeout=CONNECT_TIMEOUT_S)
        except EntryNotFoundError:
            raise FileNotFoundError(f"Hugging Face repository '{repo_id}': its {index.name} names "
                                    f"the shard '{shard}', which the repository lacks") from None


def _cached_hub_weights(repo_id: str) -> Optional[Path]:
    """The cached weights of ``repo_id``: a weights file, or an index with all its shards cached."""
    from huggingface_hub import try_to_load_from_cache
    for name in HF_WEIGHT_FILES + HF_SHARD_INDEXES:
        cached = try_to_load_from_cache(repo_id, name)
        if not isinstance(cached, str):
            continue
        if name in HF_WEIGHT_FILES:
            return Path(cached)
        index = Path(cached)
        if all((index.parent / shard).is_file() for shard in shard_names(index)):
            return index
    return None


def _unreachable(endpoint: str) -> Optional[OSError]:
    """The error connecting to ``endpoint``'s host, or None if it answers (or a proxy is set)."""
    if urllib.request.getproxies():
        return None  # only the proxy knows whether the hub is reachable
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == 'https' else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        return err
    return None


def _hub_unreachable_message(repo_id: str, err: Exception) -> str:
    from huggingface_hub import constants
    offline = ' (HF_HUB_OFFLINE is set)' if constants.HF_HUB_OFFLINE else ''
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"cannot fetch '{repo_id}' from the Hugging Face hub{offline} and it is not in the "
            f'cache {constants.HF_HUB_CACHE} ({reason}). On a machine with '
            f'internet run `hf download {repo_id} config.json pytorch_model.bin --local-dir DIR` '
            '(`huggingface-cli download` before huggingface_hub 0.34), copy DIR here and pass DIR '
            "in place of the hub id; or copy that machine's Hugging Face cache to this one")


def _weights_in_directory(path: Path) -> Path:
    for name in HF_WEIGHT_FILES + HF_SHARD_INDEXES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f'directory {path} is not a Hugging Face model directory: it has none of '
        f'{list(HF_WEIGHT_FILES + HF_SHARD_INDEXES)} '
        f'(found {sorted(p.name for p in path.iterdir())[:10]})')
