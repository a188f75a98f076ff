"""Run the project's entry points (``tools/train.py``, ``tools/test.py``) as child processes.

The demo goes through the same command lines a user types, so what it shows is what they get.
The full output of each run goes to a log file; only progress lines reach ``echo``.
"""
import json
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]

# mmengine's progress and result lines; everything else (config dump, environment) stays in the log.
_PROGRESS = re.compile(
    r' - mmengine - (?:INFO|WARNING|ERROR) - (?:Iter\(|Epoch\(|Saving checkpoint|Load checkpoint|'
    r'Read checkpoint|Checkpoints will be saved|Results written)'
    r'|(?:bbox|segm)_mAP_copypaste')
_TABLE = re.compile(r'^[|+][-+|=\w ]')  # mmseg's per-class IoU table
_TAIL_LINES = 40


def is_progress_line(line: str) -> bool:
    """Whether a line of a run's output is worth showing on the console."""
    return bool(_PROGRESS.search(line) or _TABLE.match(line))


def format_cfg_options(options: Mapping[str, object]) -> list:
    """``['--cfg-options', 'k=v', ...]`` for the tools' ``--cfg-options``; empty if no options.

    Raises:
        ValueError: a value holds a comma, which the tools (as mmengine's DictAction) would
            split on.
    """
    items = []
    for key, value in options.items():
        text = str(value)
        if isinstance(value, (list, tuple)):
            text = '[' + ','.join(str(v) for v in value) + ']'
        elif ',' in text:
            raise ValueError(f'--cfg-options value {key}={text!r} contains a comma, which '
                             'mmengine would split on; use a path without one')
        items.append(f'{key}={text}')
    return ['--cfg-options', *items] if items else []


def run_tool(tool: PathLike, args: Sequence[str], log_file: PathLike,
             echo: Optional[Callable[[str], None]] = None,
             env: Optional[Dict[str, str]] = None) -> None:
    """Run ``python TOOL ARGS``, write all its output to ``log_file``, echo progress lines.

    Args:
        tool: Path of the script.
        args: Its command-line arguments.
        log_file: Where the whole output goes (created with its folder).
        echo: Called with each progress line (see :func:`is_progress_line`); None shows nothing.
        env: Environment of the child; None inherits this process's.

    Raises:
        RuntimeError: the tool exited with a non-zero status; the message ends with the last
            lines of its output.
    """
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(tool), *map(str, args)]
    tail: deque = deque(maxlen=_TAIL_LINES)
    with open(log_file, 'w', encoding='utf-8') as log:
        log.write('$ ' + ' '.join(command) + '\n')
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1, env=env) as process:
            for line in process.stdout:
                log.write(line)
                tail.append(line)
                if echo is not None and is_progress_line(line):
                    echo(line.rstrip('\n'))
            status = process.wait()
    if status != 0:
        raise RuntimeError(f'{Path(tool).name} exited with status {status}; last lines of '
                           f'{log_file}:\n' + ''.join(tail))


def last_checkpoint(work_dir: PathLike) -> Path:
    """The checkpoint mmengine's CheckpointHook recorded last in ``work_dir/last_checkpoint``.

    Raises:
        FileNotFoundError: no checkpoint was recorded, or the recorded file is gone.
    """
    record = Path(work_dir) / 'last_checkpoint'
    if not record.is_file():
        raise FileNotFoundError(f'{work_dir} has no last_checkpoint: the training saved no '
                                'checkpoint')
    path = Path(record.read_text(encoding='utf-8').strip())
    if not path.is_absolute() and not path.is_file():
        path = Path(work_dir) / path.name
    if not path.is_file():
        raise FileNotFoundError(f'{record} names {path}, which does not exist')
    return path


def read_test_metrics(work_dir: PathLike) -> Dict[str, float]:
    """Metrics of the newest ``tools/test.py`` run in ``work_dir`` (``<stamp>/<stamp>.json``).

    Raises:
        FileNotFoundError: no run in ``work_dir`` wrote its metrics.
    """
    runs = sorted(p for p in Path(work_dir).glob('*/*.json') if p.stem == p.parent.name)
    if not runs:
        raise FileNotFoundError(f'no test metrics (<timestamp>/<timestamp>.json) in {work_dir}')
    return json.loads(runs[-1].read_text(encoding='utf-8'))
