"""Peak memory of one step, each configuration in a fresh process.

On CPU the measure is the resident-set high-water mark of a new Python process during the step
(Linux ``VmHWM``, reset just before the step through ``/proc/self/clear_refs``), minus its
resident set before the step (model and input built), so the figure is what the step itself
adds: activations, gradients and workspace. The second step is measured, after one warm-up. glibc is told to return every
freed block of 64 KiB or more to the system at once, so the high-water mark tracks the live
tensors instead of the allocator's cache. On a GPU, ``torch.cuda.max_memory_allocated`` is used
in-process instead (see ``tools/benchmark_gpu.py``).
"""
import json
import os
import resource
import subprocess
import sys
from typing import Dict

from .cases import Case

PAGE_SIZE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc/self/statm``)."""
    with open('/proc/self/statm') as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current resident set (Linux >= 4.0); False if refused."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Resident-set high-water mark of this process (since the last :func:`reset_peak_rss`)."""
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure_step_memory(case: Case, arch, timeout: float = 1800.0) -> Dict[str, float]:
    """Run one step of ``case`` in a fresh process and return its memory figures in MiB.

    Returns:
        ``{'before_mib', 'peak_mib', 'step_mib', 'peak_reset'}``: resident set before the step,
        the high-water mark during it, their difference, and whether the mark could be reset
        (if not, it is the process's all-time mark).

    Raises:
        RuntimeError: the child process failed (its stderr is in the message).
    """
    spec = json.dumps({'case': case.as_dict(), 'arch': arch})
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
    result = subprocess.run([sys.executable, '-m', __name__, spec], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f'memory probe for {case.label()} failed:\n{result.stderr[-2000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_cuda_step_memory(case: Case, arch) -> Dict[str, float]:
    """Peak GPU memory of one step of ``case`` (after a warm-up step), in this process, in MiB.

    Returns:
        ``{'before_mib', 'peak_mib', 'step_mib'}`` from ``torch.cuda.memory_allocated`` before
        the step and ``torch.cuda.max_memory_allocated`` during it.
    """
    import torch

    from .cases import build_model, make_images, make_step, prepare
    torch.manual_seed(0)
    model = prepare(build_model(case.impl, arch, drop_path_rate=case.drop_path_rate), case,
                    'cuda')
    step = make_step(model, case, make_images(case, 'cuda'))
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, step
    torch.cuda.empty_cache()
    mib = 1024.0 * 1024.0
    return {'before_mib': before / mib, 'peak_mib': peak / mib, 'step_mib': (peak - before) / mib}


def _probe(spec: Dict) -> Dict[str, float]:
    import torch

    from .cases import build_model, make_images, make_step, prepare
    fields = dict(spec['case'], size=tuple(spec['case']['size']))
    case = Case(**fields)
    torch.manual_seed(0)
    model = prepare(build_model(case.impl, spec['arch'], drop_path_rate=case.drop_path_rate),
                    case)
    images = make_images(case)
    step = make_step(model, case, images)
    step()  # first-call costs (lazy imports, oneDNN primitives) are not the step's memory
    reset = reset_peak_rss()
    before = current_rss_bytes()
    step()
    peak = peak_rss_bytes()
    mib = 1024.0 * 1024.0
    return {'before_mib': before / mib, 'peak_mib': peak / mib, 'step_mib': (peak - before) / mib,
            'peak_reset': reset}


if __name__ == '__main__':
    print(json.dumps(_probe(json.loads(sys.argv[1]))))
