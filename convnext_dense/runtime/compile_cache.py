"""torch.compile's on-disk cache kept apart per ATen CPU capability.

torch 2.13's FX graph cache key leaves out the vector instruction set that
``ATEN_CPU_CAPABILITY`` selects, so a graph that one process compiled is served to a process
running under another capability. Measured on an AVX-512 Xeon with a small ConvNeXt (the
backbone's channels-last maps): a process under ``ATEN_CPU_CAPABILITY=avx2`` given the native
process's cached graph returned values around 1e37; the other way round glibc aborted with
"double free or corruption". The same kind of gap in that key as pytorch/pytorch#110611 (the
thread count, keyed since #184444) and #185449 (the attention backend).
``ATEN_CPU_CAPABILITY=avx2`` is how README approximates an AVX2-only CPU, so the tools and the
tests give each capability its own cache directory.
"""
import getpass
import os
import re
import tempfile
from typing import MutableMapping, Optional

CAPABILITY_VARIABLE = 'ATEN_CPU_CAPABILITY'
CACHE_DIR_VARIABLE = 'TORCHINDUCTOR_CACHE_DIR'


def default_cache_dir() -> str:
    """torch inductor's default cache directory: ``<temp dir>/torchinductor_<user>``.

    Written out rather than imported: ``torch._inductor.runtime.cache_dir_utils`` imports the whole
    inductor package, 5 s here on every tool start-up. Only a sibling name is built from it, so a
    later torch moving its default would still leave each capability a directory of its own.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f'uid_{os.getuid()}'
    safe_user = re.sub(r'[\\/:*?"<>|]', '_', user)
    return os.path.join(tempfile.gettempdir(), 'torchinductor_' + safe_user)


def keep_compile_cache_per_capability(
        environ: MutableMapping[str, str] = os.environ) -> Optional[str]:
    """Give torch.compile a cache directory of its own when ``ATEN_CPU_CAPABILITY`` is set.

    Call it before the first compilation: torch reads ``TORCHINDUCTOR_CACHE_DIR`` then, and
    child processes inherit it. A cache directory already set is left as it is.

    Returns:
        The directory set (``<default>_aten_<capability>``), or None when nothing changed.
    """
    capability = environ.get(CAPABILITY_VARIABLE, '').strip().lower()
    if not capability or environ.get(CACHE_DIR_VARIABLE):
        return None
    directory = f'{default_cache_dir()}_aten_{re.sub(r"[^a-z0-9]", "_", capability)}'
    environ[CACHE_DIR_VARIABLE] = directory
    return directory
